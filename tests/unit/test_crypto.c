/* test_crypto: known-answer vectors for crypto.c (FIPS 180 SHA, RFC 4231/2202 HMAC, RFC 4648
 * encodings, Argon2id strings made by the argon2 CLI) and jws.c (RFC 7515 appendix A, RFC 8037
 * appendix A.4, and the classic JWT attacks at the signature layer). */
#include "crypto.h"
#include "jws.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

static char hexbuf[2 * JWS_SIG_MAX + 1];
static const char *hex(const unsigned char *p, size_t n)
{
    crypto_hex_encode(p, n, hexbuf);
    return hexbuf;
}

static const char *digest_hex(int md, const char *msg, size_t n)
{
    unsigned char out[CRYPTO_MD_MAX];
    int len = crypto_digest(md, msg, n, out);
    return len > 0 ? hex(out, (size_t)len) : "(failed)";
}

static const char *hmac_hex(int md, const void *key, size_t kl, const void *msg, size_t n)
{
    unsigned char out[CRYPTO_MD_MAX];
    int len = crypto_hmac(md, key, kl, msg, n, out);
    return len > 0 ? hex(out, (size_t)len) : "(failed)";
}

/* A base64url string decoded into a static slot (several live at once). */
static jws_bytes b64u(const char *s)
{
    static unsigned char slots[16][JWS_SIG_MAX];
    static int next;
    unsigned char *out = slots[next++ % 16];
    long n = crypto_b64_decode(s, strlen(s), out, 1);
    if (n < 0) { printf("# bad base64url in test: %s\n", s); n = 0; }
    return (jws_bytes){out, (size_t)n};
}

static char b64out[2 * JWS_SIG_MAX];
static const char *enc(const char *s, size_t n, int url)
{
    crypto_b64_encode(s, n, b64out, url);
    return b64out;
}

static const char *dec(const char *s, int url)
{
    static char out[256];
    long n = crypto_b64_decode(s, strlen(s), (unsigned char *)out, url);
    if (n < 0) return NULL;
    out[n] = 0;
    return out;
}

static void test_digests(void)
{
    /* FIPS 180-2 appendix examples */
    is_str(digest_hex(CRYPTO_SHA256, "abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "SHA-256 abc");
    is_str(digest_hex(CRYPTO_SHA256, "", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "SHA-256 empty");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    is_str(digest_hex(CRYPTO_SHA256, two, strlen(two)), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "SHA-256 two blocks");
    is_str(digest_hex(CRYPTO_SHA1, "abc", 3), "a9993e364706816aba3e25717850c26c9cd0d89d", "SHA-1 abc");
    is_str(digest_hex(CRYPTO_SHA384, "abc", 3),
           "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7", "SHA-384 abc");
    is_str(digest_hex(CRYPTO_SHA512, "abc", 3),
           "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
           "SHA-512 abc");
    is_int(crypto_md_from_name("sha256"), CRYPTO_SHA256, "md name sha256");
    is_int(crypto_md_from_name("SHA-512"), CRYPTO_SHA512, "md name SHA-512");
    is_int(crypto_md_from_name("md5"), -1, "md5 is not offered");
}

static void test_hmac(void)
{
    /* RFC 4231 test cases 1, 2, 3, 4, 6, 7 */
    unsigned char k1[20], k3[20], d3[50], k4[25], d4[50], k6[131];
    memset(k1, 0x0b, 20);
    memset(k3, 0xaa, 20);
    memset(d3, 0xdd, 50);
    for (int i = 0; i < 25; i++) k4[i] = (unsigned char)(i + 1);
    memset(d4, 0xcd, 50);
    memset(k6, 0xaa, 131);
    is_str(hmac_hex(CRYPTO_SHA256, k1, 20, "Hi There", 8), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", "RFC 4231 1 SHA-256");
    is_str(hmac_hex(CRYPTO_SHA512, k1, 20, "Hi There", 8),
           "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
           "RFC 4231 1 SHA-512");
    is_str(hmac_hex(CRYPTO_SHA256, "Jefe", 4, "what do ya want for nothing?", 28),
           "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "RFC 4231 2 SHA-256");
    is_str(hmac_hex(CRYPTO_SHA384, "Jefe", 4, "what do ya want for nothing?", 28),
           "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649", "RFC 4231 2 SHA-384");
    is_str(hmac_hex(CRYPTO_SHA256, k3, 20, d3, 50), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", "RFC 4231 3 SHA-256");
    is_str(hmac_hex(CRYPTO_SHA256, k4, 25, d4, 50), "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", "RFC 4231 4 SHA-256");
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    is_str(hmac_hex(CRYPTO_SHA256, k6, 131, m6, strlen(m6)), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", "RFC 4231 6 SHA-256 (long key)");
    const char *m7 = "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed "
                     "before being used by the HMAC algorithm.";
    is_str(hmac_hex(CRYPTO_SHA256, k6, 131, m7, strlen(m7)), "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", "RFC 4231 7 SHA-256");
    /* RFC 2202 test case 2 (HMAC-SHA-1) */
    is_str(hmac_hex(CRYPTO_SHA1, "Jefe", 4, "what do ya want for nothing?", 28), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79", "RFC 2202 2 SHA-1");
    is_str(hmac_hex(CRYPTO_SHA256, "", 0, "", 0), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad", "empty key and message");
}

static void test_encodings(void)
{
    /* RFC 4648 section 10 */
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const b64[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const b64url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    static const char *const b16[] = {"", "66", "666f", "666f6f", "666f6f62", "666f6f6261", "666f6f626172"};
    char name[64];
    for (int i = 0; i < 7; i++) {
        size_t n = strlen(in[i]);
        snprintf(name, sizeof name, "base64 \"%s\"", in[i]);
        is_str(enc(in[i], n, 0), b64[i], name);
        is_int(crypto_b64_len(n, 0), strlen(b64[i]), "base64 length");
        is_str(dec(b64[i], 0), in[i], "base64 decodes back");
        snprintf(name, sizeof name, "base64url \"%s\"", in[i]);
        is_str(enc(in[i], n, 1), b64url[i], name);
        is_str(dec(b64url[i], 1), in[i], "base64url decodes back");
        is_str(dec(b64[i], 1), in[i], "base64url accepts correct padding");
        is_str(dec(b64url[i], 0), in[i], "base64 accepts no padding");
        char h[32];
        crypto_hex_encode(in[i], n, h);
        is_str(h, b16[i], "hex");
    }
    unsigned char hi[2] = {0xfb, 0xff};
    is_str(enc((const char *)hi, 2, 0), "+/8=", "base64 alphabet: + and /");
    is_str(enc((const char *)hi, 2, 1), "-_8", "base64url alphabet: - and _");
    ok(!dec("-_8", 0), "base64 rejects - and _");
    ok(!dec("+/8", 1), "base64url rejects + and /");
    ok(!dec("Zm9v\n", 0), "whitespace is an error");
    ok(!dec("Zg=", 0), "wrong padding length is an error");
    ok(!dec("Zm9=v", 0), "padding inside is an error");
    ok(!dec("Zh==", 0), "non-zero trailing bits are an error");
    ok(!dec("Z", 1), "a single character is an error");
    unsigned char raw[8];
    is_int(crypto_hex_decode("666F6f", 6, raw), 3, "hex decode accepts upper case");
    ok(memcmp(raw, "foo", 3) == 0, "hex decode bytes");
    is_int(crypto_hex_decode("666", 3, raw), -1, "odd hex length");
    is_int(crypto_hex_decode("6g", 2, raw), -1, "non-hex character");
}

static void test_random_equal(void)
{
    unsigned char a[32], b[32], zero[32] = {0};
    crypto_random(a, sizeof a);
    crypto_random(b, sizeof b);
    ok(memcmp(a, b, 32) != 0 && memcmp(a, zero, 32) != 0, "two random draws differ and are not zero");
    ok(crypto_equal("secret", 6, "secret", 6), "equal strings");
    ok(!crypto_equal("secret", 6, "secreT", 6), "last byte differs");
    ok(!crypto_equal("secret", 6, "secre", 5), "lengths differ");
    ok(crypto_equal("", 0, "", 0), "two empty strings");
}

static void test_password(void)
{
    /* made by the Debian argon2 CLI: echo -n PW | argon2 SALT -id -t T -m LOG2KIB -p P -e */
    static const struct { const char *pw, *hash; } cli[] = {
        {"correct horse", "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzYWx0$5YHT8ZDhBeqdbLaIKKPWaHOVfqCkLDnJo/WC5yMJsmg"},
        {"correct horse", "$argon2id$v=19$m=4096,t=1,p=4$b3RoZXJzYWx0MTZieXRl$1Me/2sHVS117/N+keKdCwjQKXnRdIGXv9D03UXVnLlM"},
        {"p\xc3\xa4ssw\xc3\xb6rd", "$argon2i$v=19$m=1024,t=3,p=2$c2FsdHNhbHRzYWx0$HYOKX2we37eFrhAW4Wg+fLx6Kn3uqxdCf/78wVj8nac"},
    };
    for (size_t i = 0; i < sizeof cli / sizeof cli[0]; i++) {
        size_t pl = strlen(cli[i].pw), hl = strlen(cli[i].hash);
        ok(crypto_password_verify(cli[i].pw, pl, cli[i].hash, hl), "argon2 CLI hash %zu verifies", i);
        ok(!crypto_password_verify("correct horsE", 13, cli[i].hash, hl), "argon2 CLI hash %zu rejects a wrong password", i);
    }
    /* the CLI itself, when installed, with a salt this run picks */
    FILE *p = popen("command -v argon2 >/dev/null && printf %s 'live pw' | argon2 salt4live$$ -id -t 1 -m 10 -p 2 -e", "r");
    char line[256] = "";
    if (p && fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        ok(crypto_password_verify("live pw", 7, line, strlen(line)), "a hash the argon2 CLI just made verifies: %s", line);
    } else {
        printf("# argon2 CLI not installed: live CLI check skipped\n");
    }
    if (p) pclose(p);

    char h[CRYPTO_PASSWORD_STRLEN];
    is_int(crypto_password_hash("hunter2", 7, 1, 8192 * 1024, h), 0, "hash");
    ok(strncmp(h, "$argon2id$v=19$m=8192,t=1,p=1$", 30) == 0, "PHC string names argon2id and the parameters: %s", h);
    ok(crypto_password_verify("hunter2", 7, h, strlen(h)), "own hash verifies");
    ok(!crypto_password_verify("hunter3", 7, h, strlen(h)), "own hash rejects another password");
    char h2[CRYPTO_PASSWORD_STRLEN];
    crypto_password_hash("hunter2", 7, 1, 8192 * 1024, h2);
    ok(strcmp(h, h2) != 0, "a fresh salt per hash");
    ok(!crypto_password_needs_rehash(h, strlen(h), 1, 8192 * 1024), "same parameters: no rehash");
    ok(crypto_password_needs_rehash(h, strlen(h), 2, 8192 * 1024), "other parameters: rehash");
    ok(crypto_password_needs_rehash(cli[2].hash, strlen(cli[2].hash), 3, 1024 * 1024), "argon2i: rehash to argon2id");
    ok(!crypto_password_verify("hunter2", 7, "not a hash", 10), "garbage hash: false");
    ok(!crypto_password_verify("hunter2", 7, "", 0), "empty hash: false");
    ok(!crypto_password_verify("hunter2", 7, "$argon2id$v=19$m=8192,t=1,p=1$\0x", 33), "NUL in hash: false");
    is_int(crypto_password_hash("x", 1, 0, 8192 * 1024, h), -1, "ops 0 is refused");
    is_int(crypto_password_hash("x", 1, 1, 1024, h), -1, "mem below 8 KiB is refused");
    char *big = malloc(CRYPTO_PW_MAX + 1);
    memset(big, 'a', CRYPTO_PW_MAX + 1);
    is_int(crypto_password_hash(big, CRYPTO_PW_MAX + 1, 1, 8192 * 1024, h), -1, "password over the maximum is refused");
    free(big);
}

/* RFC 7515 appendix A.2's RSA key */
#define RSA_N "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
#define RSA_D "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ"
#define RSA_P "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc"
#define RSA_Q "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc"
#define RSA_DP "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0"
#define RSA_DQ "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU"
#define RSA_QI "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U"
#define PAYLOAD_B64 "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"

static const char *sig_b64(jws_key *k, int alg, const char *input)
{
    unsigned char sig[JWS_SIG_MAX];
    size_t n = 0;
    if (jws_sign(k, alg, input, strlen(input), sig, &n)) return "(sign failed)";
    crypto_b64_encode(sig, n, b64out, 1);
    return b64out;
}

static int verify_b64(jws_key *k, int alg, const char *input, const char *sig)
{
    jws_bytes s = b64u(sig);
    return jws_verify(k, alg, input, strlen(input), s.p, s.n);
}

static const jws_bytes none = {NULL, 0};

static void test_jws_rfc(void)
{
    char err[256];
    /* A.1: HS256 */
    jws_bytes k = b64u("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow");
    jws_key *hk = jws_key_secret(k.p, k.n);
    const char *a1 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." PAYLOAD_B64;
    is_str(sig_b64(hk, JWS_HS256, a1), "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "RFC 7515 A.1 HS256 signature");
    is_str(sig_b64(hk, JWS_HS256, a1), "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "A.1 again (the key's MAC context is reused)");
    ok(verify_b64(hk, JWS_HS256, a1, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "A.1 verifies");
    ok(!verify_b64(hk, JWS_HS256, a1, "eBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "A.1 with one byte changed fails");
    ok(!verify_b64(hk, JWS_HS256, a1, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOE"), "A.1 truncated fails");
    ok(!verify_b64(hk, JWS_HS384, a1, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "A.1 under HS384 fails");

    /* A.2: RS256 (deterministic: the exact signature) */
    jws_key *rk = jws_key_rsa(b64u(RSA_N), b64u("AQAB"), b64u(RSA_D), b64u(RSA_P), b64u(RSA_Q), b64u(RSA_DP), b64u(RSA_DQ),
                              b64u(RSA_QI), err, sizeof err);
    ok(rk != NULL, "A.2 RSA private JWK: %s", rk ? "ok" : err);
    const char *a2 = "eyJhbGciOiJSUzI1NiJ9." PAYLOAD_B64;
    const char *a2sig = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    if (rk) is_str(sig_b64(rk, JWS_RS256, a2), a2sig, "RFC 7515 A.2 RS256 signature");
    jws_key *rpub = jws_key_rsa(b64u(RSA_N), b64u("AQAB"), none, none, none, none, none, none, err, sizeof err);
    ok(rpub && !jws_key_private(rpub) && jws_key_bits(rpub) == 2048, "A.2 public JWK: 2048-bit public key");
    if (rpub) {
        ok(verify_b64(rpub, JWS_RS256, a2, a2sig), "A.2 verifies with the public key");
        ok(!verify_b64(rpub, JWS_RS256, "eyJhbGciOiJSUzI1NiJ9.e30", a2sig), "A.2 signature on another payload fails");
        unsigned char s[JWS_SIG_MAX];
        size_t sl;
        is_int(jws_sign(rpub, JWS_RS256, "x", 1, s, &sl), -1, "a public key cannot sign");
        /* PS256: random salt, so sign + verify, and PS is not RS */
        if (rk) {
            const char *ps = sig_b64(rk, JWS_PS256, a2);
            char keep[JWS_SIG_MAX * 2];
            snprintf(keep, sizeof keep, "%s", ps);
            ok(verify_b64(rpub, JWS_PS256, a2, keep), "PS256 sign + verify");
            ok(!verify_b64(rpub, JWS_RS256, a2, keep), "a PS256 signature is not an RS256 one");
        }
    }

    /* A.3: ES256 (random k: verify the RFC's signature, then sign + verify) */
    jws_key *ek = jws_key_ec("P-256", b64u("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"), b64u("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"),
                             none, err, sizeof err);
    ok(ek != NULL, "A.3 EC public JWK: %s", ek ? "ok" : err);
    const char *a3 = "eyJhbGciOiJFUzI1NiJ9." PAYLOAD_B64;
    const char *a3sig = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    if (ek) {
        ok(verify_b64(ek, JWS_ES256, a3, a3sig), "RFC 7515 A.3 ES256 verifies");
        ok(!verify_b64(ek, JWS_ES256, a3, "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSBpmWQxfKTUJqPP3-Kg6NU1Q"), "A.3 altered S fails");
        ok(!verify_b64(ek, JWS_ES256, a3, "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU"), "A.3 half a signature fails");
        ok(!verify_b64(ek, JWS_ES384, a3, a3sig), "a P-256 key does not verify ES384");
    }
    jws_key *ekp = jws_key_ec("P-256", b64u("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"), b64u("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"),
                              b64u("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"), err, sizeof err);
    ok(ekp && jws_key_private(ekp), "A.3 EC private JWK");
    if (ekp && ek) {
        const char *s = sig_b64(ekp, JWS_ES256, a3);
        is_int(strlen(s), 86, "ES256 signature is 64 bytes R||S");
        char keep[128];
        snprintf(keep, sizeof keep, "%s", s);
        ok(verify_b64(ek, JWS_ES256, a3, keep), "ES256 sign + verify");
    }
    ok(!jws_key_ec("P-256", b64u("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"), b64u("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5b0"),
                   none, err, sizeof err),
       "a point off the curve is refused: %s", err);
    ok(!jws_key_ec("P-256", b64u("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"), b64u("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"),
                   b64u("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LA"), err, sizeof err),
       "a d that does not match x, y is refused");

    /* A.4: ES512 on P-521 */
    jws_key *e5 = jws_key_ec("P-521", b64u("AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk"),
                             b64u("ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"), none, err, sizeof err);
    ok(e5 && verify_b64(e5, JWS_ES512, "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA",
                        "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn"),
       "RFC 7515 A.4 ES512 verifies");

    /* RFC 8037 A.4: Ed25519 (deterministic) */
    jws_key *ed = jws_key_okp("Ed25519", b64u("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"), b64u("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"), err, sizeof err);
    ok(ed != NULL, "RFC 8037 Ed25519 private JWK: %s", ed ? "ok" : err);
    const char *e8 = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    const char *e8sig = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    if (ed) is_str(sig_b64(ed, JWS_EDDSA, e8), e8sig, "RFC 8037 A.4 EdDSA signature");
    jws_key *edp = jws_key_okp("Ed25519", b64u("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"), none, err, sizeof err);
    ok(edp && verify_b64(edp, JWS_EDDSA, e8, e8sig), "RFC 8037 A.5 verifies with the public key");
    ok(edp && !verify_b64(edp, JWS_EDDSA, "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmd", e8sig), "tampered payload fails");
    ok(!jws_key_okp("Ed25519", b64u("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"), b64u("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyug2A"), err, sizeof err),
       "a d whose public key is not x is refused");

    /* public parameters come back as the JWK had them */
    unsigned char a[JWS_SIG_MAX], b[JWS_SIG_MAX];
    size_t al, bl;
    if (rpub && jws_key_public(rpub, a, &al, b, &bl) == 0) {
        crypto_b64_encode(a, al, b64out, 1);
        is_str(b64out, RSA_N, "RSA public n round-trips");
    } else ok(0, "RSA public export");
    if (ek && jws_key_public(ek, a, &al, b, &bl) == 0) {
        crypto_b64_encode(b, bl, b64out, 1);
        is_str(b64out, "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "EC public y round-trips");
    } else ok(0, "EC public export");
    if (edp && jws_key_public(edp, a, &al, b, &bl) == 0) {
        crypto_b64_encode(a, al, b64out, 1);
        is_str(b64out, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "OKP public x round-trips");
    } else ok(0, "OKP public export");

    jws_key_free(hk);
    jws_key_free(rk);
    jws_key_free(rpub);
    jws_key_free(ek);
    jws_key_free(ekp);
    jws_key_free(e5);
    jws_key_free(ed);
    jws_key_free(edp);
}

/* PEM text of a fresh key made with OpenSSL itself (public, private, or 2: private encrypted). */
static char *make_pem(const char *type, int bits, int priv)
{
    EVP_PKEY *pk = bits ? EVP_PKEY_Q_keygen(NULL, NULL, type, (size_t)bits)
                 : strcmp(type, "EC") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, type, "P-256") : EVP_PKEY_Q_keygen(NULL, NULL, type);
    BIO *bio = BIO_new(BIO_s_mem());
    if (priv == 2) PEM_write_bio_PKCS8PrivateKey(bio, pk, EVP_aes_128_cbc(), "pass phrase", 11, NULL, NULL);
    else if (priv) PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL);
    else PEM_write_bio_PUBKEY(bio, pk);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = 0;
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return out;
}

static void test_jws_attacks(void)
{
    char err[256];
    unsigned char sig[JWS_SIG_MAX];
    size_t sl;
    is_int(jws_alg_from_name("none", 4), -1, "alg none is not an algorithm");
    is_int(jws_alg_from_name("None", 4), -1, "nor None");
    is_int(jws_alg_from_name("HS256", 5), JWS_HS256, "HS256");
    is_int(jws_alg_from_name("hs256", 5), -1, "alg names are case-sensitive");
    is_str(jws_alg_name(JWS_EDDSA), "EdDSA", "EdDSA name");

    /* HS256 "signed" with the RSA public key's PEM as the HMAC secret (CVE-2015-9235): the
     * verifier holds an RSA key, and an RSA key never verifies an HS* signature */
    char *pub = make_pem("RSA", 2048, 0);
    jws_key *rk = jws_key_pem(pub, strlen(pub), err, sizeof err);
    ok(rk && jws_key_kind(rk) == JWS_RSA && !jws_key_private(rk), "RSA public PEM: %s", rk ? "ok" : err);
    jws_key *forged = jws_key_secret(pub, strlen(pub));
    const char *input = "eyJhbGciOiJIUzI1NiJ9.eyJhZG1pbiI6dHJ1ZX0";
    ok(jws_sign(forged, JWS_HS256, input, strlen(input), sig, &sl) == 0, "attacker signs HS256 with the public PEM");
    ok(rk && !jws_verify(rk, JWS_HS256, input, strlen(input), sig, sl), "the RSA key rejects that HS256 signature");
    is_str(rk ? jws_key_fits(rk, JWS_HS256) : "", "alg needs an HMAC secret", "and says why");
    jws_key_free(forged);
    jws_key_free(rk);
    free(pub);

    char *priv = make_pem("RSA", 2048, 1);
    jws_key *rp = jws_key_pem(priv, strlen(priv), err, sizeof err);
    ok(rp && jws_key_private(rp), "RSA private PEM");
    ok(rp && jws_sign(rp, JWS_RS256, input, strlen(input), sig, &sl) == 0 && jws_verify(rp, JWS_RS256, input, strlen(input), sig, sl),
       "a private key verifies its own signature");
    jws_key_free(rp);
    free(priv);

    char *small = make_pem("RSA", 1024, 0);
    jws_key *rs = jws_key_pem(small, strlen(small), err, sizeof err);
    is_str(rs ? jws_key_fits(rs, JWS_RS256) : "", "RSA key smaller than 2048 bits", "RSA-1024 does not fit RS256");
    jws_key_free(rs);
    free(small);

    char *ecpem = make_pem("EC", 0, 1);
    jws_key *eck = jws_key_pem(ecpem, strlen(ecpem), err, sizeof err);
    ok(eck && jws_key_kind(eck) == JWS_EC && !strcmp(jws_key_curve(eck), "P-256"), "EC P-256 private PEM");
    ok(eck && jws_sign(eck, JWS_ES256, input, strlen(input), sig, &sl) == 0 && sl == 64 &&
           jws_verify(eck, JWS_ES256, input, strlen(input), sig, sl),
       "ES256 PEM sign + verify");
    is_str(eck ? jws_key_fits(eck, JWS_RS256) : "", "alg needs an RSA key", "an EC key does not fit RS256");
    jws_key_free(eck);
    free(ecpem);
    char *edpem = make_pem("ED25519", 0, 1);
    jws_key *edk = jws_key_pem(edpem, strlen(edpem), err, sizeof err);
    ok(edk && jws_key_kind(edk) == JWS_OKP && jws_key_private(edk), "Ed25519 private PEM");
    ok(edk && jws_sign(edk, JWS_EDDSA, input, strlen(input), sig, &sl) == 0 && sl == 64 &&
           jws_verify(edk, JWS_EDDSA, input, strlen(input), sig, sl),
       "Ed25519 PEM sign + verify");
    jws_key_free(edk);
    free(edpem);

    jws_key *shortk = jws_key_secret("short secret", 12);
    is_str(jws_key_fits(shortk, JWS_HS256), "HMAC secret shorter than the hash (RFC 7518 section 3.2)", "a 12-byte HS256 secret is refused");
    is_int(jws_sign(shortk, JWS_HS256, "x", 1, sig, &sl), -1, "and cannot sign");
    jws_key_free(shortk);

    ok(!jws_key_pem("not a key", 9, err, sizeof err), "garbage PEM: %s", err);
    char *enc_pem = make_pem("ED25519", 0, 2);
    ok(strstr(enc_pem, "ENCRYPTED PRIVATE KEY") && !jws_key_pem(enc_pem, strlen(enc_pem), err, sizeof err),
       "an encrypted PEM is refused, never prompted for");
    free(enc_pem);
    ok(!jws_key_rsa(b64u("AQAB"), none, none, none, none, none, none, none, err, sizeof err), "RSA JWK without e");
    ok(!jws_key_ec("P-192", b64u("AQAB"), b64u("AQAB"), none, err, sizeof err), "unknown curve");
    ok(!jws_key_okp("X25519", b64u("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"), none, err, sizeof err), "X25519 is not a signing curve");
}

int main(void)
{
    ok(crypto_init() == 0, "crypto_init");
    test_digests();
    test_hmac();
    test_encodings();
    test_random_equal();
    test_password();
    test_jws_rfc();
    test_jws_attacks();
    crypto_thread_cleanup();
    return tap_done();
}
