/* crypto.c: digests and HMAC on libcrypto; randomness, encodings and Argon2id on libsodium. */
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_status = -1;
static EVP_MD *mds[CRYPTO_NMD];
static EVP_MAC *hmac_alg;
static pthread_key_t tls_key;

static const char *const md_names[CRYPTO_NMD] = {"SHA1", "SHA256", "SHA384", "SHA512"};
static const size_t md_sizes[CRYPTO_NMD] = {20, 32, 48, 64};

/* This thread's HMAC contexts, one per digest, created on first use. */
typedef struct tls_ctx {
    EVP_MAC_CTX *mac[CRYPTO_NMD];
} tls_ctx;

static void tls_free(void *p)
{
    tls_ctx *t = p;
    if (!t) return;
    for (int i = 0; i < CRYPTO_NMD; i++) EVP_MAC_CTX_free(t->mac[i]);
    free(t);
}

static void do_init(void)
{
    if (sodium_init() < 0) return;
    /* fetched once: an implicit fetch per call (EVP_sha256(), HMAC()) costs more than hashing
     * a small message */
    for (int i = 0; i < CRYPTO_NMD; i++)
        if (!(mds[i] = EVP_MD_fetch(NULL, md_names[i], NULL))) return;
    if (!(hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL))) return;
    if (pthread_key_create(&tls_key, tls_free)) return;
    init_status = 0;
}

int crypto_init(void)
{
    pthread_once(&init_once, do_init);
    return init_status;
}

int crypto_md_from_name(const char *name)
{
    if (!name) return -1;
    static const char *const alt[CRYPTO_NMD] = {"SHA-1", "SHA-256", "SHA-384", "SHA-512"};
    for (int i = 0; i < CRYPTO_NMD; i++)
        if (strcasecmp(name, md_names[i]) == 0 || strcasecmp(name, alt[i]) == 0) return i;
    return -1;
}

size_t crypto_md_size(int md) { return md >= 0 && md < CRYPTO_NMD ? md_sizes[md] : 0; }

const void *crypto_md_evp(int md)
{
    if (crypto_init() || md < 0 || md >= CRYPTO_NMD) return NULL;
    return mds[md];
}

int crypto_digest(int md, const void *p, size_t n, unsigned char *out)
{
    const EVP_MD *m = crypto_md_evp(md);
    unsigned int len = 0;
    if (!m || !EVP_Digest(p, n, out, &len, m, NULL)) return -1;
    return (int)len;
}

static EVP_MAC_CTX *thread_mac(int md)
{
    tls_ctx *t = pthread_getspecific(tls_key);
    if (!t) {
        if (!(t = calloc(1, sizeof *t))) return NULL;
        if (pthread_setspecific(tls_key, t)) { free(t); return NULL; }
    }
    if (!t->mac[md]) {
        EVP_MAC_CTX *c = EVP_MAC_CTX_new(hmac_alg);
        OSSL_PARAM ps[2] = {OSSL_PARAM_construct_utf8_string("digest", (char *)md_names[md], 0), OSSL_PARAM_construct_end()};
        if (!c || !EVP_MAC_CTX_set_params(c, ps)) { EVP_MAC_CTX_free(c); return NULL; }
        t->mac[md] = c;
    }
    return t->mac[md];
}

int crypto_hmac(int md, const void *key, size_t keylen, const void *msg, size_t n, unsigned char *out)
{
    if (crypto_init() || md < 0 || md >= CRYPTO_NMD) return -1;
    EVP_MAC_CTX *c = thread_mac(md);
    static const unsigned char empty[1];
    size_t len = 0;
    /* an empty key is legal HMAC; OpenSSL wants a non-NULL pointer for it */
    if (!c || !EVP_MAC_init(c, keylen ? key : empty, keylen, NULL) || !EVP_MAC_update(c, msg, n) ||
        !EVP_MAC_final(c, out, &len, CRYPTO_MD_MAX))
        return -1;
    return (int)len;
}

void crypto_thread_cleanup(void)
{
    if (init_status) return;
    tls_free(pthread_getspecific(tls_key));
    pthread_setspecific(tls_key, NULL);
}

void crypto_random(void *out, size_t n)
{
    crypto_init();
    randombytes_buf(out, n);
}

int crypto_equal(const void *a, size_t an, const void *b, size_t bn)
{
    if (an != bn) return 0;
    return an == 0 || CRYPTO_memcmp(a, b, an) == 0;
}

/* ---------------------------------------------------------------- encodings */

static int b64_variant(int url) { return url ? sodium_base64_VARIANT_URLSAFE_NO_PADDING : sodium_base64_VARIANT_ORIGINAL; }

size_t crypto_b64_len(size_t n, int url)
{
    return sodium_base64_encoded_len(n, b64_variant(url)) - 1;
}

size_t crypto_b64_encode(const void *in, size_t n, char *out, int url)
{
    size_t len = crypto_b64_len(n, url);
    sodium_bin2base64(out, len + 1, in, n, b64_variant(url));
    return len;
}

long crypto_b64_decode(const char *in, size_t n, unsigned char *out, int url)
{
    /* padding is optional: strip up to two '=' and decode without it, but a padded input must
     * have been padded to a multiple of four */
    size_t pad = 0;
    while (pad < 2 && n > pad && in[n - 1 - pad] == '=') pad++;
    if (pad && n % 4) return -1;
    size_t len = 0;
    const char *end = NULL;
    int v = url ? sodium_base64_VARIANT_URLSAFE_NO_PADDING : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
    if (sodium_base642bin(out, (n - pad) * 3 / 4 + 1, in, n - pad, NULL, &len, &end, v) != 0) return -1;
    if (end != in + n - pad) return -1;
    if (pad && (len % 3) != (size_t)(3 - pad)) return -1;   /* "QQ==" ok, "QUJD=" not */
    return (long)len;
}

size_t crypto_hex_encode(const void *in, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, in, n);
    return 2 * n;
}

long crypto_hex_decode(const char *in, size_t n, unsigned char *out)
{
    size_t len = 0;
    const char *end = NULL;
    if (n % 2) return -1;
    if (sodium_hex2bin(out, n / 2, in, n, NULL, &len, &end) != 0 || end != in + n) return -1;
    return (long)len;
}

/* ---------------------------------------------------------------- Argon2id */

int crypto_password_params_ok(unsigned long long ops, size_t mem_bytes)
{
    return ops >= crypto_pwhash_OPSLIMIT_MIN && ops <= crypto_pwhash_OPSLIMIT_MAX &&
           mem_bytes >= crypto_pwhash_MEMLIMIT_MIN && mem_bytes <= crypto_pwhash_MEMLIMIT_MAX;
}

int crypto_password_hash(const char *pw, size_t n, unsigned long long ops, size_t mem_bytes, char out[CRYPTO_PASSWORD_STRLEN])
{
    if (crypto_init() || n > CRYPTO_PW_MAX || !crypto_password_params_ok(ops, mem_bytes)) return -1;
    char tmp[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str_alg(tmp, pw, n, ops, mem_bytes, crypto_pwhash_ALG_ARGON2ID13) != 0) return -1;
    size_t len = strnlen(tmp, sizeof tmp);
    if (len >= CRYPTO_PASSWORD_STRLEN) return -1;
    memcpy(out, tmp, len + 1);
    return 0;
}

/* A NUL-terminated copy of a hash string (libsodium wants one); -1 when it cannot be one. */
static int hash_copy(const char *hash, size_t hlen, char out[crypto_pwhash_STRBYTES])
{
    if (hlen == 0 || hlen >= crypto_pwhash_STRBYTES || memchr(hash, 0, hlen)) return -1;
    memcpy(out, hash, hlen);
    out[hlen] = 0;
    return 0;
}

int crypto_password_verify(const char *pw, size_t n, const char *hash, size_t hlen)
{
    char h[crypto_pwhash_STRBYTES];
    if (crypto_init() || n > CRYPTO_PW_MAX || hash_copy(hash, hlen, h)) return 0;
    return crypto_pwhash_str_verify(h, pw, n) == 0;
}

int crypto_password_needs_rehash(const char *hash, size_t hlen, unsigned long long ops, size_t mem_bytes)
{
    char h[crypto_pwhash_STRBYTES];
    if (crypto_init() || hash_copy(hash, hlen, h)) return 1;
    if (strncmp(h, "$argon2id$", 10) != 0) return 1;
    return crypto_pwhash_argon2id_str_needs_rehash(h, ops, mem_bytes) != 0;
}
