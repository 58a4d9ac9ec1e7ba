//! Apache Struts 2 OGNL injection (`apache_struts_rce`): OGNL expressions where Struts
//! evaluates them, and the XStream gadget chains of its REST plugin.
//!
//! Struts evaluates attacker text as OGNL in several places: the `Content-Type` of a multipart
//! request (S2-045, CVE-2017-5638) and a part's `Content-Disposition` filename (S2-046), action
//! namespaces taken from the URL path (S2-057, CVE-2018-11776), `redirect:` / `action:` /
//! `method:` parameter prefixes (S2-016, S2-032, CVE-2016-3081), parameter names (S2-009, with
//! `\u0023` for `#`), and the REST plugin deserialises XML bodies with XStream (S2-052,
//! CVE-2017-9805). Every public exploit drives the same few OGNL idioms, which is what
//! [`scan`] looks for in a header value, a (decoded) request target or form body:
//!
//! - **member access** (`ognl_member_access`): `_memberAccess` (the sandbox switch of every
//!   chain since S2-009), `DEFAULT_MEMBER_ACCESS`, `denyMethodExecution`, anywhere;
//! - **static member** (`ognl_static_member`): OGNL's `@pkg.Class@member` call syntax
//!   (`@java.lang.Runtime@getRuntime()`, `@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS`,
//!   `@org.apache.struts2.ServletActionContext@getResponse()`), anywhere: a dotted lower-case
//!   package path, a class name starting upper-case, `@`, a member name;
//! - **command** (`ognl_runtime_exec`): `(#cmd=` (the S2-045 chain's command variable), anywhere;
//! - **expression** (`ognl_expression`): inside `%{ … }` or `${ … }` (matching braces), an OGNL
//!   variable assignment `#name=` (not `==`), a Struts context variable (`#context`,
//!   `#application`, `#attr`, `#parameters`, `#_memberAccess`, `#_`), or
//!   `.getRuntime().exec(`; `\u0023` counts as `#`;
//! - **probe** (`ognl_probe`, where `probe` is asked: targets and headers): `${(111+111)}`,
//!   `%{2*3}`: the arithmetic scanners send to see whether a namespace or header is evaluated.
//!
//! NeuVector's dp matches only the S2-052 XML body (a PCRE for `class="java.lang.ProcessBuilder">
//! <command><string>/bin/sh</string>`, first 2 KiB of an `application/xml` request); [`xml`]
//! covers that with any command, and the header, path and parameter forms are new here.
//! Expression markers are kept out of plain text on purpose: Thymeleaf and Spring templates
//! posted to a CMS (`${#strings.isEmpty(x)}`, `#dates`, `#request`) have `#name` inside `${}`
//! but neither assignments nor Struts' context variables, and Java source in a form
//! (`Runtime.getRuntime().exec(cmd)`) is not an expression.
//!
//! Linear in the input: one table lookup per byte, and at each anchor byte (`_ . # @ { } \`) a
//! bounded look-ahead ([`MAX_NAME`] bytes).

/// Longest name looked at after an anchor (bytes): a static member's class path, a variable.
pub const MAX_NAME: usize = 128;

/// Reason strings (`Threat::reason`), strongest first.
const REASONS: [&str; 5] =
    ["ognl_member_access", "ognl_runtime_exec", "ognl_static_member", "ognl_expression", "ognl_probe"];

/// Struts context variables an exploit reads (`#context['com.opensymphony.xwork2...']`); not
/// Thymeleaf's expression objects (`#ctx`, `#strings`, `#request`...).
const CONTEXT_VARS: [&[u8]; 6] = [b"context", b"application", b"attr", b"parameters", b"_memberAccess", b"_"];

/// One finding: why (one of the module's reasons) and the offset of the byte that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Reason (`"ognl_member_access"`, ...).
    pub reason: &'static str,
    /// Offset in the scanned bytes.
    pub at: usize,
}

fn is_anchor(c: u8) -> bool {
    matches!(c, b'_' | b'.' | b'#' | b'@' | b'{' | b'}' | b'\\')
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// The variable name after a `#` (or `\u0023`) at `b[i..]`, and the byte after it.
fn var_at(b: &[u8], i: usize) -> (&[u8], Option<u8>) {
    let rest = b.get(i..).unwrap_or_default();
    let n = rest.iter().take(MAX_NAME).take_while(|&&c| is_ident(c)).count();
    (&rest[..n], rest.get(n).copied())
}

/// `@pkg.sub.Class@member` starting at the `@` at `b[i]`: at least one lower-case package
/// segment, a class segment starting upper-case, `@`, an identifier start.
fn static_member_at(b: &[u8], i: usize) -> bool {
    let rest = b.get(i + 1..).unwrap_or_default();
    let mut segs = 0usize;
    let mut k = 0;
    let mut last_upper;
    loop {
        let seg_start = k;
        while k < rest.len() && k < MAX_NAME && is_ident(rest[k]) {
            k += 1;
        }
        if k == seg_start {
            return false;
        }
        last_upper = rest[seg_start].is_ascii_uppercase();
        if !last_upper && !rest[seg_start].is_ascii_lowercase() {
            return false;
        }
        segs += 1;
        match rest.get(k) {
            Some(b'.') if !last_upper => k += 1,
            Some(b'@') => break,
            _ => return false,
        }
        if k >= MAX_NAME {
            return false;
        }
    }
    segs >= 2 && last_upper && rest.get(k + 1).is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_')
}

/// `(111+111)}` / `2*3}` right after an opener at `b[i..]`: digits, an operator, digits.
fn probe_at(b: &[u8], i: usize) -> bool {
    let rest = b.get(i..).unwrap_or_default();
    let mut k = usize::from(rest.first() == Some(&b'('));
    let digits = |k: &mut usize| {
        let s = *k;
        while *k < rest.len() && *k - s < 10 && rest[*k].is_ascii_digit() {
            *k += 1;
        }
        *k > s
    };
    if !digits(&mut k) {
        return false;
    }
    if !matches!(rest.get(k), Some(b'+' | b'*' | b'-')) {
        return false;
    }
    k += 1;
    if !digits(&mut k) {
        return false;
    }
    if rest.get(k) == Some(&b')') {
        k += 1;
    }
    rest.get(k) == Some(&b'}')
}

/// Scans `b` for an OGNL injection; `probe`: also the arithmetic probes (targets, headers).
/// Returns the strongest finding (the first of that strength). Examines each byte once plus a
/// bounded look-ahead at anchors.
pub fn scan(b: &[u8], probe: bool) -> Option<Hit> {
    let mut best: Option<(usize, Hit)> = None;
    let mut note = |rank: usize, at: usize| {
        if best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, Hit { reason: REASONS[rank], at }));
        }
    };
    // Brace depth inside the current `%{`/`${` expression (0: outside).
    let mut depth = 0u32;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !is_anchor(c) {
            i += 1;
            continue;
        }
        match c {
            b'_' => {
                let r = &b[i..];
                if r.starts_with(b"_memberAccess") || r.starts_with(b"_MEMBER_ACCESS") {
                    note(0, i);
                    return best.map(|(_, h)| h);
                }
            }
            b'.' => {
                let r = &b[i..];
                if r.starts_with(b".denyMethodExecution") {
                    note(0, i);
                    return best.map(|(_, h)| h);
                }
                if depth > 0 && r.starts_with(b".getRuntime().exec(") {
                    note(1, i);
                }
            }
            b'#' | b'\\' => {
                let at = if c == b'#' {
                    Some(i + 1)
                } else if b[i..].starts_with(b"\\u0023") {
                    Some(i + 6)
                } else {
                    None
                };
                if let Some(v) = at {
                    let (name, next) = var_at(b, v);
                    if name == b"cmd" && next == Some(b'=') && i > 0 && b[i - 1] == b'(' {
                        note(1, i);
                    }
                    if depth > 0 && !name.is_empty() {
                        let assign = next == Some(b'=') && b.get(v + name.len() + 1) != Some(&b'=');
                        if assign || CONTEXT_VARS.contains(&name) {
                            note(3, i);
                        }
                    }
                }
            }
            b'@' => {
                if static_member_at(b, i) {
                    note(2, i);
                }
            }
            b'{' => {
                if depth > 0 {
                    depth += 1;
                } else if i > 0 && matches!(b[i - 1], b'%' | b'$') {
                    depth = 1;
                    if probe && probe_at(b, i + 1) {
                        note(4, i - 1);
                    }
                }
            }
            b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    best.map(|(_, h)| h)
}

/// XStream gadget chains in an XML request body (S2-052, CVE-2017-9805; `xstream_gadget`):
/// a `java.lang.ProcessBuilder` element or class with a `<command>`, or the gadget classes of
/// the public chains (`javax.imageio.spi.FilterIterator`,
/// `jdk.nashorn.internal.objects.NativeString`), which no benign document names. Returns the
/// offset of the marker.
pub fn xml(b: &[u8]) -> Option<Hit> {
    let hit = |at| Some(Hit { reason: "xstream_gadget", at });
    for gadget in [&b"javax.imageio.spi.FilterIterator"[..], b"jdk.nashorn.internal.objects.NativeString"] {
        if let Some(at) = memchr::memmem::find(b, gadget) {
            return hit(at);
        }
    }
    let pb = memchr::memmem::find(b, b"java.lang.ProcessBuilder")?;
    memchr::memmem::find(&b[pb..], b"<command").and_then(|_| hit(pb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads of the public exploits (Metasploit modules, exploit-db 41570, 44556, 42627,
    /// Vulhub's Struts 2 cases), as the server receives them (decoded where the container
    /// decodes).
    const EXPLOITS: &[(&str, &str)] = &[
        // S2-045 (CVE-2017-5638), Content-Type.
        ("ognl_member_access", "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS).(#_memberAccess?(#_memberAccess=#dm):((#container=#context['com.opensymphony.xwork2.ActionContext.container']).(#ognlUtil=#container.getInstance(@com.opensymphony.xwork2.ognl.OgnlUtil@class)).(#ognlUtil.getExcludedPackageNames().clear()).(#ognlUtil.getExcludedClasses().clear()).(#context.setMemberAccess(#dm)))).(#cmd='id').(#iswin=(@java.lang.System@getProperty('os.name').toLowerCase().contains('win'))).(#cmds=(#iswin?{'cmd.exe','/c',#cmd}:{'/bin/bash','-c',#cmd})).(#p=new java.lang.ProcessBuilder(#cmds)).(#p.redirectErrorStream(true)).(#process=#p.start()).(#ros=(@org.apache.struts2.ServletActionContext@getResponse().getOutputStream())).(@org.apache.commons.io.IOUtils@copy(#process.getInputStream(),#ros)).(#ros.flush())}"),
        // S2-046, a part's filename.
        ("ognl_expression", "form-data; name=\"upload\"; filename=\"%{#context['com.opensymphony.xwork2.dispatcher.HttpServletResponse'].addHeader('X-Test','Kaboom')}\0b\""),
        // S2-057 (CVE-2018-11776), namespace in the path.
        ("ognl_member_access", "/${(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS).(#ct=#request['struts.valueStack'].context).(#cr=#ct['com.opensymphony.xwork2.ActionContext.container']).(#ou=#cr.getInstance(@com.opensymphony.xwork2.ognl.OgnlUtil@class)).(#ou.getExcludedPackageNames().clear()).(#ou.getExcludedClasses().clear()).(#ct.setMemberAccess(#dm)).(#a=@java.lang.Runtime@getRuntime().exec('id')).(@org.apache.commons.io.IOUtils@toString(#a.getInputStream()))}/actionChain1.action"),
        ("ognl_probe", "/struts2-showcase/${(111+111)}/actionChain1.action"),
        // S2-032 (CVE-2016-3081), a `method:` parameter name.
        ("ognl_member_access", "method:#_memberAccess=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS,#res=@org.apache.struts2.ServletActionContext@getResponse()"),
        // S2-016, `redirect:`.
        ("ognl_member_access", "redirect:${#context['xwork.MethodAccessor.denyMethodExecution']=false,#f=#_memberAccess.getClass().getDeclaredField('allowStaticMethodAccess')}"),
        // The same idioms without the member-access switch.
        ("ognl_static_member", "${@java.lang.Runtime@getRuntime().exec('id')}"),
        ("ognl_static_member", "${@java.lang.System@getProperty('user.dir')}"),
        ("ognl_static_member", "x=@org.apache.commons.io.IOUtils@toString(#a)"),
        ("ognl_runtime_exec", "%{(#cmd='cat /etc/passwd').(#p=new java.lang.ProcessBuilder(#cmd))}"),
        ("ognl_expression", "${(#a=#application).(#a.toString())}"),
        ("ognl_expression", "%{\\u0023context['xwork.x']}"),
        ("ognl_runtime_exec", "${''.getClass().forName('java.lang.Runtime').getRuntime().exec('id')}"),
    ];

    #[test]
    fn exploit_payloads_are_found_with_their_reason() {
        for (reason, p) in EXPLOITS {
            let h = scan(p.as_bytes(), true).unwrap_or_else(|| panic!("missed {p}"));
            assert_eq!(h.reason, *reason, "{p}");
            assert!(h.at < p.len());
        }
        assert_eq!(scan(b"/a/${(111+111)}/b", false), None, "probes only where asked");
    }

    #[test]
    fn benign_text_is_not_ognl() {
        for b in [
            &b"multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"[..],
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
            b"mailto:user@example.com, admin@Mail.Example.org",
            b"From: user@mail.Example.com; Foo@Bar.Baz@x",
            b"/search?q=%23context+and+%23application",
            b"q=#application #context hashtags",
            b"<p th:text=\"${#strings.isEmpty(name)} ${#dates.format(today)} ${#request.getParameter('x')}\"/>",
            b"Process p = Runtime.getRuntime().exec(cmd); // java",
            b"/api/${id}/items?total=${1 + x}",
            b"${user.name} == ${#x == 1}",
            b"_ga=GA1.2.12345; _gid=GA1.2.555; session_id=abc_def",
            b"{\"a\":{\"b\":[1,2,{}]}}",
            b"\\u0023 is a hash sign",
            b"%{",
            b"@",
            b"@java.lang.",
        ] {
            assert_eq!(scan(b, true), None, "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn xstream_bodies() {
        // exploit-db 42627 (S2-052), abridged to its gadget chain.
        let body = br#"<map><entry><jdk.nashorn.internal.objects.NativeString><flags>0</flags><value class="com.sun.xml.internal.bind.v2.runtime.unmarshaller.Base64Data"><dataHandler><dataSource class="com.sun.xml.internal.ws.encoding.xml.XMLMessage$XmlDataSource"><is class="javax.crypto.CipherInputStream"><cipher class="javax.crypto.NullCipher"><serviceIterator class="javax.imageio.spi.FilterIterator"><iter class="javax.imageio.spi.FilterIterator"><iter class="java.util.Collections$EmptyIterator"/><next class="java.lang.ProcessBuilder"><command><string>/bin/sh</string><string>-c</string><string>id</string></command>"#;
        assert_eq!(xml(body).map(|h| h.reason), Some("xstream_gadget"));
        let plain = br#"<next class="java.lang.ProcessBuilder"> <command> <string>cmd.exe</string></command></next>"#;
        assert!(xml(plain).is_some());
        for benign in [&br#"<?xml version="1.0"?><order><id>3</id><name>Bob</name></order>"#[..], b"<doc>java.lang.ProcessBuilder starts processes</doc>"] {
            assert_eq!(xml(benign), None);
        }
    }

    #[test]
    fn any_bytes_scan_without_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let alphabet = b"_.#@{}\\$%()=0123456789u+*-abcjJRxX'\"";
        for _ in 0..20_000 {
            let n = (x % 40) as usize;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = scan(&v, true);
            let _ = xml(&v);
        }
    }
}
