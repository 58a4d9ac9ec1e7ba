"""SYNs to 198.18.151.2:80 from 2500 random sources in 198.18.0.0/15 (floods.sh, step 2).

hping3's --rand-source draws from the whole IPv4 space; this keeps every address inside the
benchmarking range. Usage: spoof_syn.py IFACE (run in the client namespace).
"""
import random
import sys

from scapy.all import Ether, IP, TCP, conf, sendp

conf.verb = 0
random.seed(15)
pkts = []
for _ in range(2500):
    while True:
        a = random.getrandbits(17)
        src = "198.%d.%d.%d" % (18 + (a >> 16), (a >> 8) & 255, a & 255)
        if src not in ("198.18.151.1", "198.18.151.2"):
            break
    pkts.append(Ether() / IP(src=src, dst="198.18.151.2") /
                TCP(sport=random.randint(1024, 65535), dport=80, flags="S", seq=random.getrandbits(32)))
sendp(pkts, iface=sys.argv[1])
