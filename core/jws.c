/* jws.c: JWS keys and signatures (RFC 7515/7518/8037) on libcrypto's EVP interface. */
#include "jws.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

struct jws_key {
    int kind;
    int priv;
    int bits;
    const char *curve;           /* static string: "P-256", "Ed25519", ... */
    EVP_PKEY *pkey;              /* RSA, EC, OKP */
    unsigned char *secret;       /* JWS_SECRET */
    size_t slen;
    EVP_MAC_CTX *mac[3];         /* HS256/384/512, keyed on first use and re-initialised after */
};

static const struct alg_info {
    const char *name;
    int md;                      /* crypto_md, -1 for EdDSA */
    int kind;
    int pss;
    const char *curve;           /* ES*: the only curve it may use */
    size_t coord;                /* ES*: bytes of R and of S */
} algs[JWS_NALGS] = {
    {"HS256", CRYPTO_SHA256, JWS_SECRET, 0, NULL, 0}, {"HS384", CRYPTO_SHA384, JWS_SECRET, 0, NULL, 0},
    {"HS512", CRYPTO_SHA512, JWS_SECRET, 0, NULL, 0}, {"RS256", CRYPTO_SHA256, JWS_RSA, 0, NULL, 0},
    {"RS384", CRYPTO_SHA384, JWS_RSA, 0, NULL, 0},    {"RS512", CRYPTO_SHA512, JWS_RSA, 0, NULL, 0},
    {"PS256", CRYPTO_SHA256, JWS_RSA, 1, NULL, 0},    {"PS384", CRYPTO_SHA384, JWS_RSA, 1, NULL, 0},
    {"PS512", CRYPTO_SHA512, JWS_RSA, 1, NULL, 0},    {"ES256", CRYPTO_SHA256, JWS_EC, 0, "P-256", 32},
    {"ES384", CRYPTO_SHA384, JWS_EC, 0, "P-384", 48}, {"ES512", CRYPTO_SHA512, JWS_EC, 0, "P-521", 66},
    {"EdDSA", -1, JWS_OKP, 0, NULL, 0},
};

static const struct curve_info {
    const char *jwk, *ossl;
    size_t coord;
} curves[] = {
    {"P-256", "prime256v1", 32}, {"P-384", "secp384r1", 48}, {"P-521", "secp521r1", 66},
};

static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hmac_alg;
static void mac_init(void) { hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL); }

int jws_alg_from_name(const char *name, size_t n)
{
    for (int i = 0; i < JWS_NALGS; i++)
        if (strlen(algs[i].name) == n && memcmp(algs[i].name, name, n) == 0) return i;
    return -1;
}

const char *jws_alg_name(int alg) { return alg >= 0 && alg < JWS_NALGS ? algs[alg].name : NULL; }

static void seterr(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    ERR_clear_error();           /* nothing left on this thread's OpenSSL error queue */
}

static jws_key *key_new(int kind)
{
    jws_key *k = calloc(1, sizeof *k);
    if (k) k->kind = kind;
    return k;
}

void jws_key_free(jws_key *k)
{
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    for (int i = 0; i < 3; i++) EVP_MAC_CTX_free(k->mac[i]);
    if (k->secret) OPENSSL_clear_free(k->secret, k->slen);
    free(k);
}

jws_key *jws_key_secret(const void *s, size_t n)
{
    jws_key *k = key_new(JWS_SECRET);
    if (!k) return NULL;
    k->secret = OPENSSL_malloc(n ? n : 1);
    if (!k->secret) { free(k); return NULL; }
    memcpy(k->secret, s, n);
    k->slen = n;
    k->priv = 1;
    k->bits = (int)(8 * n);
    return k;
}

/* Fills kind, bits and curve from the EVP_PKEY; -1 when its type is not one JWS uses. */
static int key_adopt(jws_key *k, EVP_PKEY *pk, char *err, size_t errlen)
{
    int id = EVP_PKEY_get_base_id(pk);
    k->pkey = pk;
    k->bits = EVP_PKEY_get_bits(pk);
    if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) {
        k->kind = JWS_RSA;
    } else if (id == EVP_PKEY_EC) {
        char g[64];
        size_t gl = 0;
        k->kind = JWS_EC;
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, g, sizeof g, &gl)) g[0] = 0;
        for (size_t i = 0; i < sizeof curves / sizeof curves[0]; i++)
            if (strcmp(g, curves[i].ossl) == 0) k->curve = curves[i].jwk;
        if (!k->curve) { seterr(err, errlen, "EC key on a curve JWS does not use (P-256, P-384, P-521)"); return -1; }
    } else if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) {
        k->kind = JWS_OKP;
        k->curve = id == EVP_PKEY_ED25519 ? "Ed25519" : "Ed448";
    } else {
        seterr(err, errlen, "unsupported key type (RSA, EC P-256/384/521, Ed25519 or Ed448)");
        return -1;
    }
    return 0;
}

/* Never prompts for a passphrase: an encrypted PEM is an error. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) { return -1; }

static EVP_PKEY *decode_pem(const char *pem, size_t n, int selection)
{
    EVP_PKEY *pk = NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)n);
    OSSL_DECODER_CTX *d = bio ? OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", NULL, NULL, selection, NULL, NULL) : NULL;
    if (d) {
        OSSL_DECODER_CTX_set_pem_password_cb(d, no_passphrase, NULL);
        if (!OSSL_DECODER_from_bio(d, bio)) pk = NULL;
    }
    OSSL_DECODER_CTX_free(d);
    BIO_free(bio);
    return pk;
}

jws_key *jws_key_pem(const char *pem, size_t n, char *err, size_t errlen)
{
    if (n > 1 << 20) { seterr(err, errlen, "PEM too large"); return NULL; }
    jws_key *k = key_new(JWS_RSA);
    if (!k) { seterr(err, errlen, "out of memory"); return NULL; }
    EVP_PKEY *pk = NULL;
    if (memmem(pem, n, "-----BEGIN CERTIFICATE-----", 27)) {
        BIO *bio = BIO_new_mem_buf(pem, (int)n);
        X509 *x = bio ? PEM_read_bio_X509(bio, NULL, no_passphrase, NULL) : NULL;
        if (x) pk = X509_get_pubkey(x);
        X509_free(x);
        BIO_free(bio);
    } else if ((pk = decode_pem(pem, n, EVP_PKEY_KEYPAIR))) {
        k->priv = 1;
    } else {
        pk = decode_pem(pem, n, EVP_PKEY_PUBLIC_KEY);
    }
    if (!pk) {
        seterr(err, errlen, "not a PEM key or certificate (or an encrypted one)");
        jws_key_free(k);
        return NULL;
    }
    if (key_adopt(k, pk, err, errlen)) { jws_key_free(k); return NULL; }
    ERR_clear_error();
    return k;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *b, int priv)
{
    EVP_PKEY *pk = NULL;
    OSSL_PARAM *ps = OSSL_PARAM_BLD_to_param(b);
    EVP_PKEY_CTX *c = ps ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    if (!c || EVP_PKEY_fromdata_init(c) <= 0 ||
        EVP_PKEY_fromdata(c, &pk, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, ps) <= 0)
        pk = NULL;
    EVP_PKEY_CTX_free(c);
    OSSL_PARAM_free(ps);
    return pk;
}

static int push_bn(OSSL_PARAM_BLD *b, const char *name, jws_bytes v, BIGNUM **keep)
{
    if (!v.n) return 0;
    if (!(*keep = BN_bin2bn(v.p, (int)v.n, NULL))) return -1;
    return OSSL_PARAM_BLD_push_BN(b, name, *keep) ? 0 : -1;
}

jws_key *jws_key_rsa(jws_bytes n, jws_bytes e, jws_bytes d, jws_bytes p, jws_bytes q, jws_bytes dp,
                     jws_bytes dq, jws_bytes qi, char *err, size_t errlen)
{
    if (!n.n || !e.n) { seterr(err, errlen, "RSA JWK needs n and e"); return NULL; }
    if (n.n > JWS_SIG_MAX || e.n > 8) { seterr(err, errlen, "RSA JWK: n or e too large"); return NULL; }
    int crt = p.n && q.n && dp.n && dq.n && qi.n;
    if ((p.n || q.n || dp.n || dq.n || qi.n) && (!crt || !d.n)) {
        seterr(err, errlen, "RSA JWK: d, p, q, dp, dq and qi go together");
        return NULL;
    }
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    BIGNUM *bn[8] = {0};
    const char *names[8] = {OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
                            OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
                            OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    jws_bytes v[8] = {n, e, d, p, q, dp, dq, qi};
    int bad = !b;
    for (int i = 0; i < 8 && !bad; i++) bad = push_bn(b, names[i], v[i], &bn[i]);
    EVP_PKEY *pk = bad ? NULL : from_params("RSA", b, d.n > 0);
    OSSL_PARAM_BLD_free(b);
    for (int i = 0; i < 8; i++) BN_clear_free(bn[i]);
    jws_key *k = pk ? key_new(JWS_RSA) : NULL;
    if (!k) { EVP_PKEY_free(pk); seterr(err, errlen, "RSA JWK: the parameters do not make a key"); return NULL; }
    k->priv = d.n > 0;
    key_adopt(k, pk, NULL, 0);
    ERR_clear_error();
    return k;
}

jws_key *jws_key_ec(const char *crv, jws_bytes x, jws_bytes y, jws_bytes d, char *err, size_t errlen)
{
    const struct curve_info *ci = NULL;
    for (size_t i = 0; crv && i < sizeof curves / sizeof curves[0]; i++)
        if (strcmp(crv, curves[i].jwk) == 0) ci = &curves[i];
    if (!ci) { seterr(err, errlen, "EC JWK: crv must be P-256, P-384 or P-521"); return NULL; }
    /* RFC 7518 section 6.2.1.2: coordinates are always the full size of the field */
    if (x.n != ci->coord || y.n != ci->coord || (d.n && d.n != ci->coord)) {
        seterr(err, errlen, "EC JWK: x, y (and d) must each be the curve's size");
        return NULL;
    }
    unsigned char pt[1 + 2 * 66];
    pt[0] = 4;                   /* uncompressed point */
    memcpy(pt + 1, x.p, x.n);
    memcpy(pt + 1 + x.n, y.p, y.n);
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    BIGNUM *bd = NULL;
    int bad = !b || !OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, ci->ossl, 0) ||
              !OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * ci->coord) ||
              push_bn(b, OSSL_PKEY_PARAM_PRIV_KEY, d, &bd);
    EVP_PKEY *pk = bad ? NULL : from_params("EC", b, d.n > 0);
    OSSL_PARAM_BLD_free(b);
    BN_clear_free(bd);
    /* the point must be on the curve (an off-curve point is the invalid-curve attack) */
    EVP_PKEY_CTX *chk = pk ? EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL) : NULL;
    int ok = chk && EVP_PKEY_public_check(chk) == 1 && (!d.n || EVP_PKEY_pairwise_check(chk) == 1);
    EVP_PKEY_CTX_free(chk);
    jws_key *k = ok ? key_new(JWS_EC) : NULL;
    if (!k) { EVP_PKEY_free(pk); seterr(err, errlen, "EC JWK: not a valid point (or d does not match it)"); return NULL; }
    k->priv = d.n > 0;
    key_adopt(k, pk, NULL, 0);
    ERR_clear_error();
    return k;
}

jws_key *jws_key_okp(const char *crv, jws_bytes x, jws_bytes d, char *err, size_t errlen)
{
    int id;
    size_t len;
    if (crv && strcmp(crv, "Ed25519") == 0) { id = EVP_PKEY_ED25519; len = 32; }
    else if (crv && strcmp(crv, "Ed448") == 0) { id = EVP_PKEY_ED448; len = 57; }
    else { seterr(err, errlen, "OKP JWK: crv must be Ed25519 or Ed448"); return NULL; }
    if (x.n != len || (d.n && d.n != len)) { seterr(err, errlen, "OKP JWK: x (and d) must be the curve's size"); return NULL; }
    EVP_PKEY *pk = d.n ? EVP_PKEY_new_raw_private_key(id, NULL, d.p, d.n) : EVP_PKEY_new_raw_public_key(id, NULL, x.p, x.n);
    if (pk && d.n) {             /* the public key derived from d must be the x given */
        unsigned char pub[57];
        size_t pl = sizeof pub;
        if (!EVP_PKEY_get_raw_public_key(pk, pub, &pl) || pl != len || memcmp(pub, x.p, len) != 0) {
            EVP_PKEY_free(pk);
            pk = NULL;
        }
    }
    jws_key *k = pk ? key_new(JWS_OKP) : NULL;
    if (!k) { EVP_PKEY_free(pk); seterr(err, errlen, "OKP JWK: the parameters do not make a key"); return NULL; }
    k->priv = d.n > 0;
    key_adopt(k, pk, NULL, 0);
    return k;
}

int jws_key_kind(const jws_key *k) { return k->kind; }
int jws_key_private(const jws_key *k) { return k->priv; }
int jws_key_bits(const jws_key *k) { return k->bits; }
const char *jws_key_curve(const jws_key *k) { return k->curve; }

static int get_bn(EVP_PKEY *pk, const char *name, unsigned char *out, size_t *len, size_t pad)
{
    BIGNUM *bn = NULL;
    if (!EVP_PKEY_get_bn_param(pk, name, &bn)) return -1;
    int n = (size_t)BN_num_bytes(bn) > JWS_SIG_MAX ? -1 : pad ? BN_bn2binpad(bn, out, (int)pad) : BN_bn2bin(bn, out);
    BN_free(bn);
    if (n < 0) return -1;
    *len = (size_t)n;
    return 0;
}

int jws_key_public(const jws_key *k, unsigned char *a, size_t *alen, unsigned char *b, size_t *blen)
{
    int rc = -1;
    *alen = *blen = 0;
    if (k->kind == JWS_RSA) {
        rc = get_bn(k->pkey, OSSL_PKEY_PARAM_RSA_N, a, alen, 0) || get_bn(k->pkey, OSSL_PKEY_PARAM_RSA_E, b, blen, 0) ? -1 : 0;
    } else if (k->kind == JWS_EC) {
        size_t coord = 0;
        for (size_t i = 0; i < sizeof curves / sizeof curves[0]; i++)
            if (strcmp(k->curve, curves[i].jwk) == 0) coord = curves[i].coord;
        rc = get_bn(k->pkey, OSSL_PKEY_PARAM_EC_PUB_X, a, alen, coord) || get_bn(k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, b, blen, coord) ? -1 : 0;
    } else if (k->kind == JWS_OKP) {
        *alen = JWS_SIG_MAX;
        rc = EVP_PKEY_get_raw_public_key(k->pkey, a, alen) ? 0 : -1;
    }
    ERR_clear_error();
    return rc;
}

const char *jws_key_fits(const jws_key *k, int alg)
{
    if (alg < 0 || alg >= JWS_NALGS) return "unknown alg";
    const struct alg_info *ai = &algs[alg];
    if (k->kind != ai->kind) {
        static const char *const want[] = {"alg needs an HMAC secret", "alg needs an RSA key", "alg needs an EC key",
                                           "alg needs an Ed25519/Ed448 key"};
        return want[ai->kind];
    }
    if (ai->kind == JWS_SECRET && k->slen < crypto_md_size(ai->md)) return "HMAC secret shorter than the hash (RFC 7518 section 3.2)";
    if (ai->kind == JWS_RSA && k->bits < JWS_RSA_MIN_BITS) return "RSA key smaller than 2048 bits";
    if (ai->kind == JWS_EC && strcmp(k->curve, ai->curve) != 0) return "EC key on another curve than alg names";
    return NULL;
}

/* The key's MAC context for alg, keyed once and re-initialised (same key) on later uses. */
static EVP_MAC_CTX *key_mac(jws_key *k, int alg)
{
    int i = alg - JWS_HS256;
    if (k->mac[i]) return EVP_MAC_init(k->mac[i], NULL, 0, NULL) ? k->mac[i] : NULL;
    pthread_once(&mac_once, mac_init);
    static const char *const dn[3] = {"SHA256", "SHA384", "SHA512"};
    EVP_MAC_CTX *c = hmac_alg ? EVP_MAC_CTX_new(hmac_alg) : NULL;
    OSSL_PARAM ps[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)dn[i], 0), OSSL_PARAM_construct_end()};
    if (!c || !EVP_MAC_init(c, k->secret, k->slen, ps)) { EVP_MAC_CTX_free(c); return NULL; }
    k->mac[i] = c;
    return c;
}

static int hmac_sig(jws_key *k, int alg, const void *msg, size_t n, unsigned char *out, size_t *len)
{
    EVP_MAC_CTX *c = key_mac(k, alg);
    return c && EVP_MAC_update(c, msg, n) && EVP_MAC_final(c, out, len, JWS_SIG_MAX) ? 0 : -1;
}

static int digest_init(EVP_MD_CTX *m, jws_key *k, const struct alg_info *ai, int sign)
{
    EVP_PKEY_CTX *pc = NULL;
    const EVP_MD *md = ai->md >= 0 ? crypto_md_evp(ai->md) : NULL;
    int ok = sign ? EVP_DigestSignInit(m, &pc, md, NULL, k->pkey) : EVP_DigestVerifyInit(m, &pc, md, NULL, k->pkey);
    if (ok <= 0) return -1;
    if (ai->kind == JWS_RSA) {
        /* RFC 7518 section 3.5: PSS with MGF1 on the same hash and a salt as long as the hash */
        if (EVP_PKEY_CTX_set_rsa_padding(pc, ai->pss ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING) <= 0) return -1;
        if (ai->pss && EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) <= 0) return -1;
    }
    return 0;
}

int jws_sign(jws_key *k, int alg, const void *msg, size_t n, unsigned char *sig, size_t *siglen)
{
    if (jws_key_fits(k, alg) || !k->priv) return -1;
    const struct alg_info *ai = &algs[alg];
    if (ai->kind == JWS_SECRET) return hmac_sig(k, alg, msg, n, sig, siglen);
    unsigned char der[JWS_SIG_MAX + 16];
    size_t len = sizeof der;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int rc = m && digest_init(m, k, ai, 1) == 0 && EVP_DigestSign(m, ai->kind == JWS_EC ? der : sig, &len, msg, n) > 0 ? 0 : -1;
    EVP_MD_CTX_free(m);
    if (rc == 0 && ai->kind == JWS_EC) {         /* DER SEQUENCE { r, s } -> fixed-size R || S */
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
        const BIGNUM *r, *s;
        if (es) ECDSA_SIG_get0(es, &r, &s);
        if (!es || BN_bn2binpad(r, sig, (int)ai->coord) < 0 || BN_bn2binpad(s, sig + ai->coord, (int)ai->coord) < 0) rc = -1;
        ECDSA_SIG_free(es);
        len = 2 * ai->coord;
    }
    ERR_clear_error();
    if (rc == 0) *siglen = len;
    return rc;
}

int jws_verify(jws_key *k, int alg, const void *msg, size_t n, const unsigned char *sig, size_t siglen)
{
    if (jws_key_fits(k, alg)) return 0;
    const struct alg_info *ai = &algs[alg];
    if (ai->kind == JWS_SECRET) {
        unsigned char mac[CRYPTO_MD_MAX];
        size_t len = 0;
        return hmac_sig(k, alg, msg, n, mac, &len) == 0 && crypto_equal(mac, len, sig, siglen);
    }
    unsigned char der[2 * 66 + 16];
    const unsigned char *s = sig;
    size_t slen = siglen;
    if (ai->kind == JWS_EC) {                    /* R || S -> DER for OpenSSL */
        if (siglen != 2 * ai->coord) return 0;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, (int)ai->coord, NULL), *ss = BN_bin2bn(sig + ai->coord, (int)ai->coord, NULL);
        unsigned char *p = der;
        int dl = -1;
        if (es && r && ss && ECDSA_SIG_set0(es, r, ss)) {
            r = ss = NULL;                       /* owned by es now */
            if (i2d_ECDSA_SIG(es, NULL) <= (int)sizeof der) dl = i2d_ECDSA_SIG(es, &p);
        }
        BN_free(r);
        BN_free(ss);
        ECDSA_SIG_free(es);
        if (dl <= 0) { ERR_clear_error(); return 0; }
        s = der;
        slen = (size_t)dl;
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = m && digest_init(m, k, ai, 0) == 0 && EVP_DigestVerify(m, s, slen, msg, n) == 1;
    EVP_MD_CTX_free(m);
    ERR_clear_error();
    return ok;
}
