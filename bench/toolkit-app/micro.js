// micro.js for bench/toolkit.sh: the same operations with Node.js's crypto, run by
// `node micro.js <keys.json>`. Prints "<name> <microseconds per operation>". The JWT verify is
// what a careful hand-written verifier does with node:crypto (split, base64url, HMAC or
// crypto.verify, timingSafeEqual, JSON.parse, exp check), like jsonwebtoken without its options.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const K = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const secret = crypto.createSecretKey(Buffer.from(K.secret));
const msg = "m".repeat(200);

function bench(name, n, fn) {
  for (let i = 0; i < n / 10; i++) fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  const t1 = process.hrtime.bigint();
  console.log(name + " " + (Number(t1 - t0) / n / 1000).toFixed(3));
}

bench("hmac_sha256_200B", 200000, () => crypto.createHmac("sha256", secret).update(msg).digest());

const DIGEST = { HS256: "sha256", RS256: "sha256", ES256: "sha256", EdDSA: null };
function verify(token, key, alg) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  const header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
  if (header.alg !== alg) return null;
  const input = parts[0] + "." + parts[1];
  const sig = Buffer.from(parts[2], "base64url");
  let ok;
  if (alg === "HS256") {
    const mac = crypto.createHmac("sha256", key).update(input).digest();
    ok = mac.length === sig.length && crypto.timingSafeEqual(mac, sig);
  } else {
    ok = crypto.verify(DIGEST[alg], Buffer.from(input), alg === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key, sig);
  }
  if (!ok) return null;
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  if (typeof claims.exp === "number" && Date.now() / 1000 > claims.exp + 30) return null;
  return claims;
}
if (!verify(K.tokens.HS256, secret, "HS256")) throw new Error("HS256 token does not verify in node");
bench("jwt_hs256_verify", 100000, () => verify(K.tokens.HS256, secret, "HS256"));
for (const alg of ["RS256", "ES256", "EdDSA"]) {
  const pub = crypto.createPublicKey(K.public[alg]);
  if (!verify(K.tokens[alg], pub, alg)) throw new Error(alg + " token does not verify in node");
  bench("jwt_" + alg.toLowerCase() + "_verify", alg === "RS256" ? 20000 : 5000, () => verify(K.tokens[alg], pub, alg));
}
const priv = crypto.createPrivateKey(K.private.RS256);
bench("jwt_rs256_sign", 500, () => {
  const input = Buffer.from('{"alg":"RS256","typ":"JWT"}').toString("base64url") + "." + Buffer.from(JSON.stringify(K.claims)).toString("base64url");
  return input + "." + crypto.sign("sha256", Buffer.from(input), priv).toString("base64url");
});
