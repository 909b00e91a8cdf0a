/* jws.h: signing keys (HMAC secrets, RSA, EC P-256/384/521, Ed25519/Ed448) read from PEM or JWK
 * parameters, and the JWS signatures of RFC 7515/7518/8037 over libcrypto's EVP_DigestSign/Verify.
 *
 * Layer L1: no Lua, no loop. A key is immutable once made, except that an HMAC key caches one
 * MAC context per digest: a key must be used by one thread at a time (each Lua state owns its
 * keys, and a state runs on one worker thread). The algorithm is always the caller's choice,
 * checked against the key's type: an RSA public key is never an HMAC secret. */
#ifndef SLUICE_JWS_H
#define SLUICE_JWS_H

#include <stddef.h>

typedef struct jws_key jws_key;

enum jws_kind { JWS_SECRET, JWS_RSA, JWS_EC, JWS_OKP };

enum jws_alg {
    JWS_HS256, JWS_HS384, JWS_HS512,
    JWS_RS256, JWS_RS384, JWS_RS512,
    JWS_PS256, JWS_PS384, JWS_PS512,
    JWS_ES256, JWS_ES384, JWS_ES512,
    JWS_EDDSA,
    JWS_NALGS
};

#define JWS_SIG_MAX 1024            /* largest signature (RSA-8192) in bytes */
#define JWS_RSA_MIN_BITS 2048       /* RFC 7518 section 3.3 */

/* A byte string (a decoded JWK member); p may be NULL when n is 0 (member absent). */
typedef struct jws_bytes {
    const unsigned char *p;
    size_t n;
} jws_bytes;

/* The alg of a JOSE header ("HS256", ..., "EdDSA"); -1 for anything else, "none" included. */
int jws_alg_from_name(const char *name, size_t n);
const char *jws_alg_name(int alg);

/* An HMAC secret (copied). NULL when out of memory. */
jws_key *jws_key_secret(const void *k, size_t n);
/* A PEM private key, public key ("PUBLIC KEY", "RSA PUBLIC KEY") or X.509 certificate (its
 * public key). NULL with a message in err when it is none of those, encrypted, or an
 * unsupported type (DSA, DH, ...). */
jws_key *jws_key_pem(const char *pem, size_t n, char *err, size_t errlen);
/* JWK parameters, decoded from base64url by the caller. RSA: n, e and for a private key d
 * (p, q, dp, dq, qi optional together). EC: crv "P-256"/"P-384"/"P-521", x, y (+ d). OKP:
 * crv "Ed25519"/"Ed448", x (+ d). NULL with a message in err when they do not make a key. */
jws_key *jws_key_rsa(jws_bytes n, jws_bytes e, jws_bytes d, jws_bytes p, jws_bytes q, jws_bytes dp,
                     jws_bytes dq, jws_bytes qi, char *err, size_t errlen);
jws_key *jws_key_ec(const char *crv, jws_bytes x, jws_bytes y, jws_bytes d, char *err, size_t errlen);
jws_key *jws_key_okp(const char *crv, jws_bytes x, jws_bytes d, char *err, size_t errlen);
void jws_key_free(jws_key *k);

int jws_key_kind(const jws_key *k);
/* 1 when the key can sign (a secret or a private key). */
int jws_key_private(const jws_key *k);
/* Key size in bits (secret: 8 * bytes). */
int jws_key_bits(const jws_key *k);
/* The curve name of an EC or OKP key ("P-256", "Ed25519"), else NULL. */
const char *jws_key_curve(const jws_key *k);
/* The public parameters of an asymmetric key for its JWK: RSA n and e, EC x and y, OKP x (b
 * unused). Writes big-endian bytes into a/b (room for JWS_SIG_MAX each); 0, or -1. */
int jws_key_public(const jws_key *k, unsigned char *a, size_t *alen, unsigned char *b, size_t *blen);

/* NULL when key and alg go together (HS* with a secret of at least the digest's size, RS/PS
 * with RSA >= 2048 bits, ESxxx with its own curve, EdDSA with an OKP key), else why not. */
const char *jws_key_fits(const jws_key *k, int alg);
/* Signs msg. sig needs JWS_SIG_MAX bytes; *siglen gets the length (ES*: the fixed-size R||S
 * of RFC 7518 section 3.4, not DER). 0, or -1 (key cannot sign or does not fit alg). */
int jws_sign(jws_key *k, int alg, const void *msg, size_t n, unsigned char *sig, size_t *siglen);
/* 1 when sig is a valid signature of msg by k under alg, else 0 (also for a key that does
 * not fit alg). HMAC signatures are compared in constant time. */
int jws_verify(jws_key *k, int alg, const void *msg, size_t n, const unsigned char *sig, size_t siglen);

#endif
