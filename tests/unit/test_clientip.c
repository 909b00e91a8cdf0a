/* test_clientip.c: trusted-proxy walk, spoofing attempts, header forms, IPv6 prefix keys. */
#include "clientip.h"
#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static struct sockaddr_storage peer_ss;

static const struct sockaddr *peer(const char *ip)
{
    memset(&peer_ss, 0, sizeof peer_ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&peer_ss;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &s6->sin6_addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&peer_ss;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &s4->sin_addr);
    }
    return (const struct sockaddr *)&peer_ss;
}

static char out[64];

/* Client for a request from peer ip with the given headers (NULL = absent). */
static const char *who(const clientip_trust *t, const char *ip, const char *xff, const char *fwd)
{
    int n = clientip_resolve(t, peer(ip), xff, xff ? strlen(xff) : 0, fwd, fwd ? strlen(fwd) : 0,
                             out, sizeof out);
    return n < 0 ? "(error)" : out;
}

static const char *key(const char *ip, unsigned prefix)
{
    return clientip_key(ip, prefix, out, sizeof out) < 0 ? "(error)" : out;
}

static void test_parse(void)
{
    char err[128];
    const char *good[] = {"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1", "172.16.0.0/12",
                          "0.0.0.0/0", "::ffff:0:0/96", "10.1.2.3/8"};
    clientip_trust *t = clientip_trust_parse(good, 8, err, sizeof err);
    ok(t != NULL, "good list parses (%s)", err);
    clientip_trust_free(t);
    const char *bad1[] = {"10.0.0.0/8", "proxy.local"};
    t = clientip_trust_parse(bad1, 2, err, sizeof err);
    ok(t == NULL && strstr(err, "#2") && strstr(err, "proxy.local"), "hostname refused: %s", err);
    const char *bad2[] = {"10.0.0.0/33"};
    ok(clientip_trust_parse(bad2, 1, err, sizeof err) == NULL && strstr(err, "10.0.0.0/33"),
       "/33 on IPv4 refused: %s", err);
    const char *bad3[] = {"fd00::/129"}, *bad4[] = {"10.0.0.0/"}, *bad5[] = {"10.0.0.0/8x"},
               *bad6[] = {""}, *bad7[] = {"[::1]"}, *bad8[] = {"1.2.3.4:80"};
    ok(!clientip_trust_parse(bad3, 1, err, sizeof err) && !clientip_trust_parse(bad4, 1, err, 128)
           && !clientip_trust_parse(bad5, 1, err, 128) && !clientip_trust_parse(bad6, 1, err, 128)
           && !clientip_trust_parse(bad7, 1, err, 128) && !clientip_trust_parse(bad8, 1, err, 128),
       "/129, empty prefix, junk after prefix, empty entry, brackets, port: all refused");
    t = clientip_trust_parse(NULL, 0, err, sizeof err);
    ok(t && !clientip_is_trusted(t, "127.0.0.1"), "empty list trusts nobody");
    clientip_trust_free(t);
    const char *nets[] = {"10.1.2.3/8", "2001:db8::/32"};
    t = clientip_trust_parse(nets, 2, err, sizeof err);
    ok(clientip_is_trusted(t, "10.200.0.1") && !clientip_is_trusted(t, "11.0.0.1"),
       "host bits in 10.1.2.3/8 are ignored");
    ok(clientip_is_trusted(t, "::ffff:10.9.9.9"), "IPv4-mapped IPv6 matches an IPv4 CIDR");
    ok(clientip_is_trusted(t, "2001:db8:ffff::1") && !clientip_is_trusted(t, "2001:db9::1"),
       "IPv6 /32 boundary");
    clientip_trust_free(t);
}

static void test_resolve(void)
{
    const char *nets[] = {"10.0.0.0/8", "fd00::/8", "192.0.2.1"};
    clientip_trust *t = clientip_trust_parse(nets, 3, NULL, 0);

    is_str(who(t, "203.0.113.9", NULL, NULL), "203.0.113.9", "no headers: the peer");
    is_str(who(t, "203.0.113.9", "1.2.3.4", NULL), "203.0.113.9",
           "spoof: XFF from an untrusted peer is ignored");
    is_str(who(t, "203.0.113.9", NULL, "for=1.2.3.4"), "203.0.113.9",
           "spoof: Forwarded from an untrusted peer is ignored");
    is_str(who(NULL, "10.0.0.1", "1.2.3.4", NULL), "10.0.0.1", "NULL trust set: the peer");
    is_str(who(t, "10.0.0.1", "198.51.100.7", NULL), "198.51.100.7", "one trusted proxy");
    is_str(who(t, "10.0.0.1", "6.6.6.6, 198.51.100.7", NULL), "198.51.100.7",
           "spoof: client-prepended XFF entry left of the real client is ignored");
    is_str(who(t, "10.0.0.3", "198.51.100.7, 10.0.0.1, 192.0.2.1, 10.0.0.2", NULL), "198.51.100.7",
           "chain of trusted hops skipped right to left");
    is_str(who(t, "10.0.0.3", "10.0.0.9,10.0.0.1", NULL), "10.0.0.9",
           "all hops trusted: the leftmost");
    is_str(who(t, "10.0.0.3", "   ", NULL), "10.0.0.3", "blank XFF: the peer");
    is_str(who(t, "10.0.0.3", "garbage, 10.0.0.7", NULL), "10.0.0.7",
           "malformed hop stops the walk at the last trusted hop");
    is_str(who(t, "10.0.0.3", "1.1.1.1, garbage", NULL), "10.0.0.3",
           "malformed rightmost hop: the peer (nothing left of garbage is believed)");
    is_str(who(t, "10.0.0.3", "1.1.1.1,,10.0.0.7", NULL), "10.0.0.7", "empty list item is malformed");
    is_str(who(t, "10.0.0.3", "1.1.1.1, unknown", NULL), "10.0.0.3", "\"unknown\" is malformed");
    is_str(who(t, "10.0.0.3", "1.1.1.1, 10.0.0.7,", NULL), "10.0.0.3", "trailing comma");
    is_str(who(t, "10.0.0.3", "1.2.3.4:5678", NULL), "1.2.3.4", "IPv4 with port");
    is_str(who(t, "10.0.0.3", "1.2.3.4:99999x", NULL), "10.0.0.3", "bad port is malformed");
    is_str(who(t, "10.0.0.3", "[2001:db8::1]:443", NULL), "2001:db8::1", "[v6]:port in XFF");
    is_str(who(t, "10.0.0.3", "[2001:db8::1]", NULL), "2001:db8::1", "[v6] in XFF");
    is_str(who(t, "10.0.0.3", "2001:DB8:0:0::1", NULL), "2001:db8::1", "bare v6, canonicalised");
    is_str(who(t, "10.0.0.3", "::ffff:1.2.3.4", NULL), "1.2.3.4", "v4-mapped hop reported as IPv4");
    is_str(who(t, "::ffff:203.0.113.5", NULL, NULL), "203.0.113.5", "v4-mapped peer reported as IPv4");
    is_str(who(t, "::ffff:10.0.0.1", "198.51.100.1", NULL), "198.51.100.1",
           "v4-mapped peer matches an IPv4 trusted CIDR");
    is_str(who(t, "fd00::5", "2001:db8:1::9, fd12::1", NULL), "2001:db8:1::9", "IPv6 proxies");
    is_str(who(t, "10.0.0.3", "fe80::1%eth0", NULL), "10.0.0.3", "zone id is malformed");
    is_str(who(t, "10.0.0.3", "1.2.3.4\t,\t 5.6.7.8 ", NULL), "5.6.7.8", "tabs and spaces trimmed");
    is_str(who(t, "10.0.0.3", "01.2.3.4", NULL), "10.0.0.3", "leading zeros are not an IPv4");

    /* RFC 7239 Forwarded */
    is_str(who(t, "10.0.0.3", NULL, "for=198.51.100.17;proto=https;by=10.0.0.3"), "198.51.100.17",
           "Forwarded for=");
    is_str(who(t, "10.0.0.3", NULL, "For=\"[2001:db8:cafe::17]:4711\""), "2001:db8:cafe::17",
           "Forwarded quoted [v6]:port, name case-insensitive");
    is_str(who(t, "10.0.0.3", NULL, "for=1.1.1.1, for=\"10.0.0.5:80\";proto=http, for=10.0.0.6"),
           "1.1.1.1", "Forwarded chain through trusted hops");
    is_str(who(t, "10.0.0.3", NULL, "for=1.1.1.1, for=unknown, for=10.0.0.6"), "10.0.0.6",
           "for=unknown stops the walk");
    is_str(who(t, "10.0.0.3", NULL, "for=1.1.1.1, for=_hidden"), "10.0.0.3", "obfuscated identifier");
    is_str(who(t, "10.0.0.3", NULL, "for=\"[2001:db8::2]:_p1\""), "2001:db8::2", "obfuscated port");
    is_str(who(t, "10.0.0.3", NULL, "proto=https;by=10.0.0.3"), "10.0.0.3", "element without for=");
    is_str(who(t, "10.0.0.3", NULL, "for=1.1.1.1;for=2.2.2.2"), "10.0.0.3", "two for= in one element");
    is_str(who(t, "10.0.0.3", NULL, "for=\"1.1.1.1, for=10.0.0.4"), "10.0.0.3", "unbalanced quote");
    is_str(who(t, "10.0.0.3", NULL, "by=\"a,b;c\";for=5.5.5.5"), "5.5.5.5",
           "comma and semicolon inside a quoted value do not split");
    is_str(who(t, "10.0.0.3", NULL, "for=\"5.5.5.\\5\""), "5.5.5.5", "quoted-pair unescaped");
    is_str(who(t, "10.0.0.3", NULL, "for = 7.7.7.7 ; proto=http"), "7.7.7.7", "OWS tolerated");

    /* Which header wins */
    is_str(who(t, "10.0.0.3", "2.2.2.2", "for=3.3.3.3"), "2.2.2.2", "AUTO: XFF wins when both present");
    is_str(who(t, "10.0.0.3", "", "for=3.3.3.3"), "3.3.3.3", "AUTO: empty XFF falls back to Forwarded");
    clientip_trust_set_header(t, CLIENTIP_HDR_FORWARDED);
    is_str(who(t, "10.0.0.3", "2.2.2.2", "for=3.3.3.3"), "3.3.3.3", "FORWARDED: XFF ignored");
    is_str(who(t, "10.0.0.3", "2.2.2.2", NULL), "10.0.0.3", "FORWARDED: no Forwarded -> the peer");
    clientip_trust_set_header(t, CLIENTIP_HDR_XFF);
    is_str(who(t, "10.0.0.3", NULL, "for=3.3.3.3"), "10.0.0.3", "XFF: Forwarded ignored");

    /* Buffers and families */
    char small[8];
    ok(clientip_resolve(t, peer("203.0.113.9"), NULL, 0, NULL, 0, small, sizeof small) == -1,
       "too small out buffer -> -1");
    struct sockaddr un = {.sa_family = AF_UNIX};
    ok(clientip_resolve(t, &un, NULL, 0, NULL, 0, out, sizeof out) == -1, "AF_UNIX peer -> -1");
    /* Lengths are honoured: the header is not NUL-terminated where the caller says it ends. */
    const char *buf = "1.2.3.4, 5.6.7.8";
    clientip_resolve(t, peer("10.0.0.1"), buf, 7, NULL, 0, out, sizeof out);
    is_str(out, "1.2.3.4", "xfflen bounds the header");
    clientip_trust_free(t);
}

static void test_key(void)
{
    is_str(key("192.0.2.33", 64), "192.0.2.33", "IPv4 key as is");
    is_str(key("::ffff:192.0.2.33", 64), "192.0.2.33", "v4-mapped key is IPv4");
    is_str(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64), "2001:db8:1:2::/64", "/64");
    is_str(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 0), "2001:db8:1:2::/64", "prefix 0 = default /64");
    is_str(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 48), "2001:db8:1::/48", "/48");
    is_str(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 128), "2001:db8:1:2:aaaa:bbbb:cccc:dddd/128", "/128");
    is_str(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 61), "2001:db8:1::/61", "/61 masks inside a group");
    is_str(key("2001:db8:1:f:1::", 61), "2001:db8:1:8::/61", "/61 keeps the top bit of the group");
    ok(strcmp(key("2001:db8:1:2::1", 64), "2001:db8:1:2::/64") == 0 &&
           strcmp(key("2001:0db8:0001:0002:ffff::9", 64), "2001:db8:1:2::/64") == 0,
       "two addresses in one /64 share a key, whatever their spelling");
    is_str(key("2001:db8:1:3::1", 64), "2001:db8:1:3::/64", "the next /64 is another key");
    is_str(key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128),
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "longest key (43 bytes)");
    is_str(key("nope", 64), "(error)", "garbage -> -1");
    is_str(key("2001:db8::1", 129), "(error)", "/129 -> -1");
    char small[10];
    ok(clientip_key("2001:db8:1:2::1", 64, small, sizeof small) == -1, "small buffer -> -1");
}

/* How an answer was found: the admin area refuses anything but PEER and a clean HOP. */
static clientip_how how(const clientip_trust *t, const char *ip, const char *xff, const char *fwd)
{
    clientip_how h = (clientip_how)-1;
    clientip_resolve_how(t, peer(ip), xff, xff ? strlen(xff) : 0, fwd, fwd ? strlen(fwd) : 0, out,
                         sizeof out, &h);
    return h;
}

static void test_how(void)
{
    char err[128];
    const char *lo[] = {"127.0.0.1"};
    clientip_trust *t = clientip_trust_parse(lo, 1, err, sizeof err);
    ok(how(t, "127.0.0.1", NULL, NULL) == CLIENTIP_PEER, "no header: PEER");
    ok(how(t, "127.0.0.1", "   ", NULL) == CLIENTIP_PEER, "blank header counts as absent");
    ok(how(t, "127.0.0.1", "203.0.113.5", NULL) == CLIENTIP_HOP && strcmp(out, "203.0.113.5") == 0,
       "trusted peer, clean XFF: HOP 203.0.113.5");
    ok(how(t, "127.0.0.1", "127.0.0.1", NULL) == CLIENTIP_HOP && clientip_is_loopback(out),
       "every hop trusted: HOP, the leftmost (loopback)");
    ok(how(t, "127.0.0.1", "garbage", NULL) == CLIENTIP_UNRESOLVED && strcmp(out, "127.0.0.1") == 0,
       "garbage XFF: UNRESOLVED (falls back to the peer)");
    ok(how(t, "127.0.0.1", "203.0.113.5, nope, 127.0.0.1", NULL) == CLIENTIP_UNRESOLVED,
       "malformed hop right of the untrusted one: UNRESOLVED");
    ok(how(t, "127.0.0.1", "nope, 203.0.113.5", NULL) == CLIENTIP_HOP && strcmp(out, "203.0.113.5") == 0,
       "malformed hop left of the client does not matter: HOP");
    ok(how(t, "127.0.0.1", ",", NULL) == CLIENTIP_UNRESOLVED, "empty list items: UNRESOLVED");
    ok(how(t, "127.0.0.1", NULL, "for=203.0.113.5") == CLIENTIP_HOP, "Forwarded: HOP");
    ok(how(t, "127.0.0.1", NULL, "for=unknown") == CLIENTIP_UNRESOLVED, "Forwarded for=unknown: UNRESOLVED");
    ok(how(NULL, "127.0.0.1", "127.0.0.1", NULL) == CLIENTIP_UNRESOLVED && strcmp(out, "127.0.0.1") == 0,
       "no trust set but a header: UNRESOLVED");
    ok(how(t, "10.9.9.9", "127.0.0.1", NULL) == CLIENTIP_UNRESOLVED && strcmp(out, "10.9.9.9") == 0,
       "untrusted peer with a header: UNRESOLVED, the peer");
    clientip_trust_set_header(t, CLIENTIP_HDR_XFF);
    ok(how(t, "127.0.0.1", NULL, "for=127.0.0.1") == CLIENTIP_UNRESOLVED,
       "pinned XFF, only Forwarded present: UNRESOLVED");
    clientip_trust_free(t);

    ok(clientip_is_loopback("127.0.0.1") && clientip_is_loopback("127.200.3.4") &&
           clientip_is_loopback("::1") && clientip_is_loopback("::ffff:127.0.0.1"),
       "loopback: 127/8, ::1, v4-mapped 127");
    ok(!clientip_is_loopback("128.0.0.1") && !clientip_is_loopback("::2") && !clientip_is_loopback("local") &&
           !clientip_is_loopback("") && !clientip_is_loopback(NULL) && !clientip_is_loopback("10.0.0.1"),
       "not loopback: other addresses, text, empty, NULL");
}

int main(void)
{
    test_parse();
    test_resolve();
    test_how();
    test_key();
    return tap_done();
}
