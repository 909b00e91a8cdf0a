/* crypto.h: hashes, HMAC, OS randomness, constant-time compare, base64/hex and Argon2id password
 * strings, on OpenSSL's libcrypto (digests, HMAC) and libsodium (encodings, randomness, Argon2id).
 *
 * Layer L0/L1: plain C, no Lua, no event loop. Every function is thread-safe. The HMAC
 * contexts behind crypto_hmac are kept per thread (the digest is fetched once per process),
 * so a call costs a key set-up and the hashing, not a provider lookup. */
#ifndef SLUICE_CRYPTO_H
#define SLUICE_CRYPTO_H

#include <stddef.h>

enum crypto_md { CRYPTO_SHA1, CRYPTO_SHA256, CRYPTO_SHA384, CRYPTO_SHA512, CRYPTO_NMD };
#define CRYPTO_MD_MAX 64            /* largest digest (SHA-512) in bytes */

/* Initialises the libraries once (idempotent, any thread); 0, or -1 when libsodium cannot start. */
int crypto_init(void);

/* "sha1", "sha256", "sha384", "sha512" (also upper case, "SHA-256"); -1 when unknown. */
int crypto_md_from_name(const char *name);
/* Digest size in bytes of md. */
size_t crypto_md_size(int md);
/* The OpenSSL EVP_MD of md, fetched once per process (for jws.c); never NULL for a valid md. */
const void *crypto_md_evp(int md);

/* (Names avoid libsodium's crypto_hash/crypto_pwhash: both libraries share the crypto_ prefix.) */
/* Digest of p[0..n) into out (crypto_md_size(md) bytes). Returns the size, or -1. */
int crypto_digest(int md, const void *p, size_t n, unsigned char *out);
/* HMAC (RFC 2104) of msg with key into out. Returns the size, or -1. */
int crypto_hmac(int md, const void *key, size_t keylen, const void *msg, size_t n, unsigned char *out);
/* Frees this thread's HMAC contexts (a thread's exit does it too). */
void crypto_thread_cleanup(void);

/* n bytes from the OS CSPRNG (getrandom via libsodium). Never fails once crypto_init succeeded. */
void crypto_random(void *out, size_t n);
/* 1 when a and b hold the same bytes. The time depends on the lengths only, never on the
 * contents (unequal lengths answer 0 at once: a length is not a secret). */
int crypto_equal(const void *a, size_t an, const void *b, size_t bn);

/* base64 (RFC 4648 section 4, with '=' padding) or base64url (section 5, without padding). */
size_t crypto_b64_len(size_t n, int url);
/* Writes crypto_b64_len(n, url) characters and a NUL to out; returns the length. */
size_t crypto_b64_encode(const void *in, size_t n, char *out, int url);
/* Decodes into out (room for n * 3 / 4 + 1 bytes). Padding is optional for both alphabets, but
 * when present it must be right; whitespace and the other alphabet's characters are errors.
 * Returns the decoded length, or -1. */
long crypto_b64_decode(const char *in, size_t n, unsigned char *out, int url);
/* Lower-case hex: 2n characters and a NUL; returns 2n. */
size_t crypto_hex_encode(const void *in, size_t n, char *out);
/* Hex (either case, even length, nothing else) into out (n / 2 bytes); the length or -1. */
long crypto_hex_decode(const char *in, size_t n, unsigned char *out);

/* Argon2id in PHC string format ($argon2id$v=19$m=...,t=...,p=1$salt$hash), libsodium's
 * crypto_pwhash_str. These take tens of milliseconds on purpose: never call them on an event
 * loop (lua_crypto.c runs them on the workpool). */
#define CRYPTO_PASSWORD_STRLEN 128    /* room for the string and its NUL */
#define CRYPTO_PW_MAX 4096          /* longest password accepted */
/* Limits libsodium accepts: ops >= 1, mem >= 8 KiB (and what the machine can allocate). */
int crypto_password_params_ok(unsigned long long ops, size_t mem_bytes);
/* 0 and the string in out, or -1 (out of memory, bad parameters, password too long). */
int crypto_password_hash(const char *pw, size_t n, unsigned long long ops, size_t mem_bytes, char out[CRYPTO_PASSWORD_STRLEN]);
/* 1 when pw matches the PHC string (any Argon2id/Argon2i parameters it names), else 0. */
int crypto_password_verify(const char *pw, size_t n, const char *hash, size_t hlen);
/* 1 when the string is not Argon2id with exactly these parameters (or not a valid hash). */
int crypto_password_needs_rehash(const char *hash, size_t hlen, unsigned long long ops, size_t mem_bytes);

#endif
