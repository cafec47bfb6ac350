/* The compiled fast path of ingest: one pass over a batch of log lines (the `line` column of
 * tl_lines, as Arrow large_string buffers) producing the columns of tl_chunk, for nginx's
 * `combined` and `common` formats, combined followed by extra quoted variables (with text
 * around them, as nginx's upstream timing format has) and unquoted ones, and the format
 * `tracklog nginx-config` writes ($msec $remote_addr, then combined's request onwards, then
 * quoted variables).
 *
 * It computes exactly what the SQL of formats.py + routes.py + signing.py computes (that SQL is
 * the reference; tests/test_fastpath.py compares the two column by column). Where a value's
 * SQL meaning is lenient in ways not worth copying (DuckDB's strptime accepting "7/nov/2026",
 * its casts accepting "1e2" or " 20"), the row is *deferred*: its index is returned and the
 * caller computes that row with the SQL. nginx itself never writes such rows.
 *
 * Input lines are attacker-controlled: every read is bounded by the line's length, every write
 * goes through the growable buffers below. The GIL is released while parsing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ SHA-256 */

#ifdef TL_OPENSSL
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
typedef SHA256_CTX sha_ctx;
static void sha_init(sha_ctx *c) { SHA256_Init(c); }
static void sha_update(sha_ctx *c, const void *p, size_t n) { SHA256_Update(c, p, n); }
static void sha_final(sha_ctx *c, uint8_t out[32]) { SHA256_Final(out, c); }
#define SHA_IMPL "openssl"
#else
/* A portable SHA-256 (FIPS 180-4), for machines without OpenSSL's headers. */
typedef struct {
    uint32_t h[8];
    uint64_t total;
    uint8_t block[64];
    size_t used;
} sha_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(sha_ctx *c, const uint8_t *p) {
    uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
    c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha_init(sha_ctx *c) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->total = 0;
    c->used = 0;
}

static void sha_update(sha_ctx *c, const void *data, size_t n) {
    const uint8_t *p = data;
    c->total += n;
    if (c->used) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->block + c->used, p, take);
        c->used += take, p += take, n -= take;
        if (c->used < 64) return;
        sha_block(c, c->block);
        c->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) sha_block(c, p);
    memcpy(c->block, p, n);
    c->used = n;
}

static void sha_final(sha_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->total * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (c->used < 56 ? 56 : 120) - c->used;
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(c, pad, padlen);
    sha_update(c, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24), out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8), out[4 * i + 3] = (uint8_t)c->h[i];
    }
}
#define SHA_IMPL "portable"
#endif

/* SIG = base64url(HMAC-SHA256(secret, path)[:16]) without padding: 22 characters. The pads'
 * states are computed once per batch, so each signature costs two compressions plus the path. */
typedef struct {
    sha_ctx inner, outer;
} hmac_key;

static void hmac_key_init(hmac_key *k, const uint8_t ipad[64], const uint8_t opad[64]) {
    sha_init(&k->inner);
    sha_update(&k->inner, ipad, 64);
    sha_init(&k->outer);
    sha_update(&k->outer, opad, 64);
}

static void expected_sig(const hmac_key *k, const char *path, size_t n, char out[22]) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t d[32];
    sha_ctx c = k->inner;
    sha_update(&c, path, n);
    sha_final(&c, d);
    c = k->outer;
    sha_update(&c, d, 32);
    sha_final(&c, d);
    int o = 0;
    for (int i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        out[o++] = b64[v >> 18], out[o++] = b64[(v >> 12) & 63], out[o++] = b64[(v >> 6) & 63], out[o++] = b64[v & 63];
    }
    out[o++] = b64[d[15] >> 2];
    out[o] = b64[(d[15] & 3) << 4];
}

/* ------------------------------------------------------------------ output buffers */

/* Output memory. Buffers of 64 KiB and more are mmap'd regions (grown with mremap, unmapped
 * when Arrow drops them), so a chunk's columns go back to the system when the chunk is done:
 * from malloc's heap, freed blocks of a few MiB stayed in the process (+250 MB of RSS over a
 * 2M-line ingest). Builds with TL_NO_MMAP (the sanitizer test) use malloc throughout. */
#if defined(__linux__) && !defined(TL_NO_MMAP)
#include <sys/mman.h>
#define TL_MMAP 1
#define MAP_MIN ((size_t)64 * 1024)
#endif

typedef struct {
    char *p;
    size_t len, cap;
    int mapped;
} growbuf;

static void region_free(void *p, size_t cap, int mapped) {
#ifdef TL_MMAP
    if (mapped) {
        munmap(p, cap);
        return;
    }
#endif
    (void)cap, (void)mapped;
    free(p);
}

static void gb_free(growbuf *b) {
    if (b->p) region_free(b->p, b->cap, b->mapped);
    b->p = NULL, b->len = b->cap = 0, b->mapped = 0;
}

/* room for `extra` more bytes; new memory is zeroed only where `zero` asks (offsets, validity) */
static int gb_grow(growbuf *b, size_t extra, int zero) {
    if (b->len + extra <= b->cap && b->p) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra) cap *= 2;
    char *p = NULL;
#ifdef TL_MMAP
    if (b->mapped) {
        p = mremap(b->p, b->cap, cap, MREMAP_MAYMOVE); /* fresh pages are zero */
        if (p == MAP_FAILED) return -1;
        b->p = p, b->cap = cap;
        return 0;
    }
    if (cap >= MAP_MIN) {
        p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return -1;
        if (b->p) memcpy(p, b->p, b->len);
        free(b->p);
        b->p = p, b->cap = cap, b->mapped = 1;
        return 0;
    }
#endif
    p = realloc(b->p, cap);
    if (!p) return -1;
    if (zero) memset(p + b->cap, 0, cap - b->cap);
    b->p = p, b->cap = cap;
    return 0;
}

static int gb_reserve(growbuf *b, size_t extra) { return gb_grow(b, extra, 0); }

static int gb_put(growbuf *b, const void *src, size_t n) {
    if (n == 0) return 0;
    if (gb_reserve(b, n)) return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

/* A nullable column: string (offsets + data) or fixed width (values). */
typedef struct {
    int is_string, width, wide; /* width: bytes per value (fixed); wide: int64 offsets */
    size_t n;
    int64_t nulls;
    uint8_t *valid;   /* = validity.p */
    void *offsets;    /* = offs.p: n + 1 entries (strings) */
    growbuf validity; /* zeroed */
    growbuf offs;     /* zeroed */
    growbuf data;     /* string bytes, or n * width value bytes (dictionary: int32 indices) */
    /* dictionary-encoded strings (user agent, referer: a few distinct values repeated) */
    int is_dict;
    size_t entries;
    growbuf dict_offs, dict_data; /* the distinct values, as a string array */
    growbuf hashes;               /* uint64 per entry */
    uint32_t *slots;              /* open addressing: entry + 1, 0 = free */
    size_t nslots;
} column;

static int col_init(column *c, int is_string, int width, int wide, size_t n, size_t data_hint) {
    memset(c, 0, sizeof *c);
    c->is_string = is_string, c->width = width, c->wide = wide, c->n = n;
    if (gb_grow(&c->validity, (n + 7) / 8 + 1, 1)) return -1;
    c->valid = (uint8_t *)c->validity.p;
    c->validity.len = (n + 7) / 8 + 1;
    if (is_string) {
        if (gb_grow(&c->offs, (n + 1) * (wide ? 8 : 4), 1)) return -1;
        c->offsets = c->offs.p;
        c->offs.len = (n + 1) * (wide ? 8 : 4);
        return gb_reserve(&c->data, data_hint + 1);
    }
    if (gb_reserve(&c->data, n * (size_t)width + 1)) return -1;
    c->data.len = n * (size_t)width;
    return 0;
}

static void col_free(column *c) {
    gb_free(&c->validity);
    gb_free(&c->offs);
    gb_free(&c->data);
    gb_free(&c->dict_offs);
    gb_free(&c->dict_data);
    gb_free(&c->hashes);
    free(c->slots);
}

static int dict_init(column *c, size_t n, int wide) {
    if (col_init(c, 0, 4, wide, n, 0)) return -1;
    c->is_dict = 1;
    c->nslots = 1024;
    c->slots = calloc(c->nslots, sizeof *c->slots);
    if (!c->slots || gb_grow(&c->dict_offs, wide ? 8 : 4, 1)) return -1;
    c->dict_offs.len = wide ? 8 : 4; /* the first offset, 0 */
    return 0;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15u ^ n, w;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9u;
        h ^= h >> 31;
    }
    w = 0;
    if (n) memcpy(&w, s, n); /* s may be NULL when n is 0 */
    h = (h ^ w) * 0x94D049BB133111EBu;
    return h ^ (h >> 29);
}

static inline size_t dict_start(const column *c, size_t e) {
    return c->wide ? (size_t)((const int64_t *)c->dict_offs.p)[e] : (size_t)((const uint32_t *)c->dict_offs.p)[e];
}

static int dict_rehash(column *c) {
    size_t nslots = c->nslots * 2;
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return -1;
    const uint64_t *hashes = (const uint64_t *)c->hashes.p;
    for (size_t e = 0; e < c->entries; e++) {
        size_t pos = hashes[e] & (nslots - 1);
        while (slots[pos]) pos = (pos + 1) & (nslots - 1);
        slots[pos] = (uint32_t)(e + 1);
    }
    free(c->slots);
    c->slots = slots, c->nslots = nslots;
    return 0;
}

/* Row i is the value s[0, n): its index in the dictionary, which gets it if it is new. */
static int dict_put(column *c, size_t i, const char *s, size_t n) {
    uint64_t h = hash_bytes(s, n);
    size_t pos = h & (c->nslots - 1);
    const uint64_t *hashes = (const uint64_t *)c->hashes.p;
    uint32_t e;
    for (; (e = c->slots[pos]) != 0; pos = (pos + 1) & (c->nslots - 1)) {
        size_t k = e - 1, a = dict_start(c, k), b = dict_start(c, k + 1);
        if (hashes[k] == h && b - a == n && (n == 0 || memcmp(c->dict_data.p + a, s, n) == 0)) break;
    }
    if (e == 0) { /* a new value */
        if (gb_put(&c->dict_data, s, n) || gb_put(&c->hashes, &h, 8)) return -1;
        if (c->wide) {
            int64_t end = (int64_t)c->dict_data.len;
            if (gb_put(&c->dict_offs, &end, 8)) return -1;
        } else {
            int32_t end = (int32_t)c->dict_data.len;
            if (gb_put(&c->dict_offs, &end, 4)) return -1;
        }
        e = (uint32_t)++c->entries;
        c->slots[pos] = e;
        if (c->entries * 2 > c->nslots && dict_rehash(c)) return -1;
    }
    int32_t index = (int32_t)(e - 1);
    memcpy(c->data.p + i * 4, &index, 4);
    c->valid[i >> 3] |= (uint8_t)(1u << (i & 7));
    return 0;
}

static inline void col_seal(column *c, size_t i, int valid) {
    /* row i is complete: its end offset, its validity bit */
    if (c->wide)
        ((int64_t *)c->offsets)[i + 1] = (int64_t)c->data.len;
    else
        ((int32_t *)c->offsets)[i + 1] = (int32_t)c->data.len;
    if (valid)
        c->valid[i >> 3] |= (uint8_t)(1u << (i & 7));
    else
        c->nulls++;
}

static inline void col_null(column *c, size_t i) {
    if (c->is_string) {
        col_seal(c, i, 0);
        return;
    }
    c->nulls++;
    memset(c->data.p + i * c->width, 0, c->width);
}

static inline int col_str(column *c, size_t i, const char *s, size_t n) {
    if (gb_put(&c->data, s, n)) return -1;
    col_seal(c, i, 1);
    return 0;
}

static inline void col_i64(column *c, size_t i, int64_t v) {
    memcpy(c->data.p + i * 8, &v, 8);
    c->valid[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static inline void col_i16(column *c, size_t i, int16_t v) {
    memcpy(c->data.p + i * 2, &v, 2);
    c->valid[i >> 3] |= (uint8_t)(1u << (i & 7));
}

/* ------------------------------------------------------------------ nginx's \xHH escapes */

static inline int hexval(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

typedef struct {
    size_t pos;
    uint8_t v;
    uint8_t kept; /* a high byte taken as part of well-formed UTF-8 */
} token;

typedef struct {
    token *t;
    size_t n, cap;
} tokens;

static int find_tokens(tokens *tk, const char *s, size_t n) {
    tk->n = 0;
    for (size_t i = 0; i + 4 <= n;) {
        const char *p = memchr(s + i, '\\', n - i - 3); /* a token needs 4 characters */
        if (!p) break;
        i = (size_t)(p - s);
        int hi = hexval((unsigned char)s[i + 2]), lo = hexval((unsigned char)s[i + 3]);
        if (s[i + 1] != 'x' || hi < 0 || lo < 0) {
            i++;
            continue;
        }
        if (tk->n == tk->cap) {
            size_t cap = tk->cap ? tk->cap * 2 : 16;
            token *t = realloc(tk->t, cap * sizeof *t);
            if (!t) return -1;
            tk->t = t, tk->cap = cap;
        }
        tk->t[tk->n++] = (token){i, (uint8_t)(hi << 4 | lo), 0};
        i += 4; /* a token's other characters are no backslash: tokens never overlap */
    }
    return 0;
}

/* One regexp_replace pass of formats._UTF8_ESCAPES over the tokens: leftmost matches of `len`
 * adjacent, not yet taken escapes whose bytes fall in the ranges [lo[k], hi[k]]. */
static void utf8_pass(tokens *tk, int len, const uint8_t *lo, const uint8_t *hi) {
    token *t = tk->t;
    for (size_t i = 0; i + (size_t)len <= tk->n;) {
        int ok = 1;
        for (int k = 0; k < len && ok; k++) {
            const token *x = &t[i + k];
            if (x->kept || x->v < lo[k] || x->v > hi[k]) ok = 0;
            if (k > 0 && x->pos != t[i + k - 1].pos + 4) ok = 0;
        }
        if (ok) {
            for (int k = 0; k < len; k++) t[i + k].kept = 1;
            i += (size_t)len;
        } else {
            i++;
        }
    }
}

static void classify_tokens(tokens *tk) {
    static const uint8_t c2[] = {0xC2, 0x80}, c2h[] = {0xDF, 0xBF};
    static const uint8_t e0[] = {0xE0, 0xA0, 0x80}, e0h[] = {0xE0, 0xBF, 0xBF};
    static const uint8_t ed[] = {0xED, 0x80, 0x80}, edh[] = {0xED, 0x9F, 0xBF};
    static const uint8_t f0[] = {0xF0, 0x90, 0x80, 0x80}, f0h[] = {0xF0, 0xBF, 0xBF, 0xBF};
    static const uint8_t f1[] = {0xF1, 0x80, 0x80, 0x80}, f1h[] = {0xF3, 0xBF, 0xBF, 0xBF};
    static const uint8_t f4[] = {0xF4, 0x80, 0x80, 0x80}, f4h[] = {0xF4, 0x8F, 0xBF, 0xBF};
    int high = 0;
    for (size_t i = 0; i < tk->n && !high; i++) high = tk->t[i].v >= 0x80;
    if (!high) return;
    utf8_pass(tk, 2, c2, c2h);
    utf8_pass(tk, 3, e0, e0h);
    /* E1-EC and EE-EF are one character class in one pass: run them as one */
    {
        token *t = tk->t;
        for (size_t i = 0; i + 3 <= tk->n;) {
            int ok = !t[i].kept && ((t[i].v >= 0xE1 && t[i].v <= 0xEC) || t[i].v == 0xEE || t[i].v == 0xEF);
            for (int k = 1; k < 3 && ok; k++)
                ok = !t[i + k].kept && t[i + k].v >= 0x80 && t[i + k].v <= 0xBF && t[i + k].pos == t[i + k - 1].pos + 4;
            if (ok) {
                t[i].kept = t[i + 1].kept = t[i + 2].kept = 1;
                i += 3;
            } else {
                i++;
            }
        }
    }
    utf8_pass(tk, 3, ed, edh);
    utf8_pass(tk, 4, f0, f0h);
    utf8_pass(tk, 4, f1, f1h);
    utf8_pass(tk, 4, f4, f4h);
}

/* Append the decoded field to `out`: escapes of ASCII and of well-formed UTF-8 become their
 * bytes, other escapes U+FFFD, everything else is copied (as url_decode leaves it). */
static int decode_into(growbuf *out, tokens *tk, const char *s, size_t n) {
    if (!memchr(s, '\\', n)) return gb_put(out, s, n);
    if (find_tokens(tk, s, n)) return -1;
    classify_tokens(tk);
    if (gb_reserve(out, n)) return -1; /* decoding never grows a field */
    size_t at = 0;
    char *o = out->p + out->len;
    for (size_t k = 0; k < tk->n; k++) {
        const token *x = &tk->t[k];
        memcpy(o, s + at, x->pos - at);
        o += x->pos - at;
        if (x->v < 0x80 || x->kept) {
            *o++ = (char)x->v;
        } else {
            *o++ = (char)0xEF, *o++ = (char)0xBF, *o++ = (char)0xBD;
        }
        at = x->pos + 4;
    }
    memcpy(o, s + at, n - at);
    o += n - at;
    out->len = (size_t)(o - out->p);
    return 0;
}

/* DuckDB's to_json of a VARCHAR, without the quotes. */
static int json_escape_into(growbuf *out, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    if (gb_reserve(out, n * 6)) return -1;
    char *o = out->p + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            *o++ = (char)ch;
            continue;
        }
        *o++ = '\\';
        switch (ch) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\t': *o++ = 't'; break;
        case '\n': *o++ = 'n'; break;
        case '\f': *o++ = 'f'; break;
        case '\r': *o++ = 'r'; break;
        default:
            *o++ = 'u', *o++ = '0', *o++ = '0', *o++ = hex[ch >> 4], *o++ = hex[ch & 15];
        }
    }
    out->len = (size_t)(o - out->p);
    return 0;
}

/* ------------------------------------------------------------------ the format */

/* ROLE_XFF: $http_x_forwarded_for, kept in `extra` as any other variable, and the address's
 * fallback when $remote_addr is '-' (formats._canonical_layers): such a line goes to the SQL */
enum { ROLE_EXTRA = 0, ROLE_UID_GOT = 1, ROLE_UID_SET = 2, ROLE_XFF = 3 };
/* routes.OPTED_OUT_SQL: "$cookie_tl_optout" is "1", or "$http_cookie" holds tl_optout=1 */
enum { OPTOUT_NONE = 0, OPTOUT_COOKIE = 1, OPTOUT_HEADER = 2 };
#define MAX_EXTRA 16
#define MAX_WORDS 32 /* words after the last quote (formats._word_template) */
#define MATCH_MAX 256 /* bytes after the last quote that list_match reads (more: the SQL's) */
#define MATCH_STEPS 20000 /* list_match's steps per line at most (more: the SQL's) */
#define PROG_TEXT 2048 /* bytes of the words' literal text, all together */
#define MAX_KEYS 16 /* config.MAX_SECRETS */

/* the layouts parse() takes (fastpath.Plan.layout) */
enum {
    LAYOUT_COMMON = 0,
    LAYOUT_COMBINED = 1,
    LAYOUT_MSEC = 2,
    LAYOUT_JSON = 3,
    LAYOUT_COMMON_ISO = 4,  /* common and combined with [$time_iso8601] for [$time_local] */
    LAYOUT_COMBINED_ISO = 5
};

/* The text between two quoted values (or after the last quote) as formats._plan_segment reads a
 * segment with one variable or none: `pre`, then the variable `var` (its index in extras; -1:
 * none, the text is `pre` exactly), then `post`. */
typedef struct {
    const char *pre, *post;
    size_t npre, npost;
    int var;
} gap;

/* A word's variable as formats._take_regexp matches it: */
enum { WORD_PLAIN, WORD_ANY, WORD_LIST }; /* [^ ]* (greedy), .*? (lazy), an upstream list */

/* The words after the last quote as one regular expression (formats._take_regexp): literal text,
 * then a variable (kind -1 in the last step: the end) */
typedef struct {
    const char *lit;
    size_t nlit;
    int kind, var;
} pstep;

typedef struct {
    int combined;  /* 1: combined or msec (quoted referer and agent, + extras), 0: common */
    int msec;      /* 1: "$msec $remote_addr " before the request, no $remote_user */
    int iso;       /* 1: [$time_iso8601] (one word) where common and combined have [$time_local] (two) */
    int json;      /* 1: JSON lines (parse_json_line) */
    int n_extra;   /* the variables other than the layout's: n_lead before $remote_addr (common and
                    * combined layouts), then after combined's user agent n_quoted quoted ones,
                    * then the unquoted ones */
    int n_lead;    /* ... space-free words before $remote_addr (such as $host) */
    int n_quoted;  /* ... the others follow the last quote, separated by single spaces */
    int elastic;   /* the unquoted one whose value may hold spaces (formats._SPACE_FREE), or -1 */
    int has_xff;   /* one of them is $http_x_forwarded_for (ROLE_XFF) */
    int n_gaps;    /* 0: single spaces between the quoted values, then the unquoted variables as
                    * words after the last quote; else n_quoted + 1 gap templates (gap_value) */
    gap gaps[MAX_EXTRA + 1]; /* gaps[g]: the text before quoted value g, or after the last quote */
    int n_words;             /* 0, or the words after the last quote (formats._word_template), each
                              * a text with at most one variable in it (tail_words) */
    int word_e;              /* the word whose variable may hold spaces, -1 none, -2 several (the SQL's
                              * regular expression: a line with more words is list_match's) */
    gap words[MAX_WORDS];
    int word_kind[MAX_WORDS];
    int n_prog;                  /* the words as list_match's steps, when no variable is WORD_ANY (else 0) */
    pstep prog[MAX_WORDS + 1];
    char prog_text[PROG_TEXT];
    int qidx[MAX_EXTRA];     /* the index in extras of quoted value k (the format's order) */
    int first_word;          /* the index in extras of the first unquoted word (n_gaps == 0) */
    int role[MAX_EXTRA];
    int decode[MAX_EXTRA]; /* formats._NEVER_ESCAPED variables are not decoded */
    int optout[MAX_EXTRA]; /* OPTOUT_*: the variable that carries the web-tracking opt-out */
    const char *key[MAX_EXTRA]; /* "name": for the JSON of `extra` */
    size_t key_len[MAX_EXTRA];
    int verify;
    int n_keys;             /* keys a signature may be made with, the signing key first */
    hmac_key hmac[MAX_KEYS];
} plan;

enum {
    C_REASON, C_LINE, C_TS, C_IP, C_METHOD, C_PATH, C_QUERY, C_STATUS, C_BYTES, C_REFERER, C_UA,
    C_UID, C_EXTRA, C_KIND, C_DELIVERY, C_LINK, C_RECIPIENT, C_SIG, N_COLS
};
static const char *const COL_NAMES[N_COLS] = {
    "reason", "line", "ts", "ip", "method", "path", "query", "status", "bytes", "referer",
    "user_agent", "uid", "extra", "kind", "delivery_id", "link_id", "recipient_id", "sig_status"};

typedef struct {
    column col[N_COLS];
    growbuf deferred; /* int64 row indices */
    growbuf scratch, scratch2;
    growbuf arena; /* a JSON line's decoded string values (json_string), read until the line is done */
    tokens tk;
} output;

typedef struct {
    const char *p;
    size_t n;
} span;

static int put_null_row(output *o, size_t i, int except_reason_line) {
    for (int c = 0; c < N_COLS; c++)
        if (!except_reason_line || (c != C_REASON && c != C_LINE)) col_null(&o->col[c], i);
    return 0;
}

static int quarantine(output *o, size_t i, const char *reason, const char *line, size_t n) {
    put_null_row(o, i, 1);
    if (col_str(&o->col[C_REASON], i, reason, strlen(reason))) return -1;
    return col_str(&o->col[C_LINE], i, line, n);
}

static int defer_row(output *o, size_t i) {
    int64_t v = (int64_t)i;
    put_null_row(o, i, 0);
    return gb_put(&o->deferred, &v, 8);
}

static inline int is_dash(span s) { return s.n == 1 && s.p[0] == '-'; }

static inline int digits(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* $time_local as nginx writes it, "[27/Nov/2026:09:14:00 +0100]", to UTC microseconds.
 * Returns 0 for anything else: the row is deferred to DuckDB's strptime, which also takes
 * forms nginx never writes. */
/* A local time (month 1-12) and its offset ('+' or '-', hours, minutes) to UTC microseconds,
 * when a date of years 1000-9999 that exists, a valid time, an offset nginx writes, and within
 * UTC years 1970-9999 (formats.py: the SQL's range); else 0, and the row is deferred, to be
 * quarantined as a bad timestamp there. */
static int utc_us(int year, int month, int day, int hh, int mm, int ss, char sign, int oh, int om, int64_t *us) {
    static const unsigned char mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12) return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int dim = mdays[month - 1] + (month == 2 && leap);
    if (year < 1000 || day < 1 || day > dim || hh > 23 || mm > 59 || ss > 59 || oh > 23 || om > 59) return 0;
    int64_t secs = days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 + hh * 3600 + mm * 60 + ss;
    int64_t offset = (int64_t)oh * 3600 + om * 60;
    secs -= sign == '+' ? offset : -offset;
    if (secs < 0 || secs >= 253402300800LL) return 0;
    *us = secs * 1000000;
    return 1;
}

static int time_local(span t, int64_t *us) {
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const char *s = t.p;
    int day, year, hh, mm, ss, oh, om, month = -1;
    if (t.n != 28 || s[0] != '[' || s[3] != '/' || s[7] != '/' || s[12] != ':' || s[15] != ':' || s[18] != ':' ||
        s[21] != ' ' || (s[22] != '+' && s[22] != '-') || s[27] != ']')
        return 0;
    for (int m = 0; m < 12; m++)
        if (memcmp(s + 4, months + 3 * m, 3) == 0) month = m;
    if (month < 0 || !digits(s + 1, 2, &day) || !digits(s + 8, 4, &year) || !digits(s + 13, 2, &hh) ||
        !digits(s + 16, 2, &mm) || !digits(s + 19, 2, &ss) || !digits(s + 23, 2, &oh) || !digits(s + 25, 2, &om))
        return 0;
    return utc_us(year, month + 1, day, hh, mm, ss, s[22], oh, om, us);
}

/* $time_iso8601 as nginx writes it, "2026-11-27T09:14:00+01:00", to UTC microseconds: what
 * formats.py's strptime('%Y-%m-%dT%H:%M:%S%z') and its offset check give. 0 for anything else
 * (deferred to the SQL). */
static int time_iso8601(span t, int64_t *us) {
    const char *s = t.p;
    int year, month, day, hh, mm, ss, oh, om;
    if (t.n != 25 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        (s[19] != '+' && s[19] != '-') || s[22] != ':')
        return 0;
    if (!digits(s, 4, &year) || !digits(s + 5, 2, &month) || !digits(s + 8, 2, &day) || !digits(s + 11, 2, &hh) ||
        !digits(s + 14, 2, &mm) || !digits(s + 17, 2, &ss) || !digits(s + 20, 2, &oh) || !digits(s + 23, 2, &om))
        return 0;
    return utc_us(year, month, day, hh, mm, ss, s[19], oh, om, us);
}

/* $msec as nginx writes it, "1793577601.123" (seconds, a dot, milliseconds), to microseconds:
 * formats.py's try_cast(... AS DECIMAL(18, 3)) of it. Returns 0 for anything else ("-", "1e9",
 * "+1.000", "1.5", digits past 12, 10000-01-01 and later): the row is deferred to the SQL. */
static int msec_time(span t, int64_t *us) {
    if (t.n < 5 || t.n > 16 || t.p[t.n - 4] != '.') return 0;
    int64_t secs = 0;
    for (size_t k = 0; k + 4 < t.n; k++) {
        if (t.p[k] < '0' || t.p[k] > '9') return 0;
        secs = secs * 10 + (t.p[k] - '0');
    }
    int ms;
    if (!digits(t.p + t.n - 3, 3, &ms) || secs >= 253402300800LL) return 0;
    *us = (secs * 1000 + ms) * 1000;
    return 1;
}

/* try_cast(raw AS BIGINT) for plain digits; 0 (defer) for anything DuckDB might read otherwise */
static int plain_bigint(span s, int64_t *v) {
    if (s.n < 1 || s.n > 18) return 0;
    int64_t x = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9') return 0;
        x = x * 10 + (s.p[i] - '0');
    }
    *v = x;
    return 1;
}

static inline int id_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
           ch == '_' || ch == '~' || ch == '-';
}

/* routes.ROUTE_RE: /o/D/R.gif, /c/D/L/R, /m/D/R, /u/D/R with ids of 1-128 [A-Za-z0-9._~-];
 * and routes.PAGE_RE: /w/TAG.gif.
 * Fills the ids (link only for clicks) and returns the route's letter, or 0. */
static char route(span path, span ids[3]) {
    if (path.n < 5 || path.p[0] != '/' || path.p[2] != '/') return 0;
    char letter = path.p[1];
    int want = letter == 'c' ? 3 : (letter == 'o' || letter == 'm' || letter == 'u') ? 2 : letter == 'w' ? 1 : 0;
    if (!want) return 0;
    const char *p = path.p + 3, *end = path.p + path.n;
    for (int k = 0; k < want; k++) {
        const char *start = p;
        while (p < end && id_char((unsigned char)*p)) p++;
        size_t n = (size_t)(p - start);
        ids[k] = (span){start, n};
        if (k < want - 1) {
            if (p == end || *p != '/' || n < 1 || n > 128) return 0;
            p++;
        } else {
            if (p != end) return 0;
            if (letter == 'o' || letter == 'w') { /* the id, then ".gif" */
                if (n < 5 || memcmp(start + n - 4, ".gif", 4) != 0) return 0;
                n -= 4;
                ids[k].n = n;
            }
            if (n < 1 || n > 128) return 0;
        }
    }
    return letter;
}

static inline int span_eq(span s, const char *lit) {
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* RE2's \s */
static inline int re2_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\f' || ch == '\r'; }

/* regexp_matches(cookies, '(^|;)\s*tl_optout=1\s*(;|$)') of routes.OPTED_OUT_SQL */
static int cookie_opted_out(const char *c, size_t n) {
    static const char want[] = "tl_optout=1";
    const size_t wn = sizeof want - 1;
    for (size_t at = 0; at <= n; at++) {
        if (at > 0 && c[at - 1] != ';') continue; /* (^|;) */
        size_t k = at;
        while (k < n && re2_space(c[k])) k++;
        if (n - k < wn || memcmp(c + k, want, wn) != 0) continue;
        k += wn;
        while (k < n && re2_space(c[k])) k++;
        if (k == n || c[k] == ';') return 1;
    }
    return 0;
}

/* The first NAME= parameter of a query string (routes.param_sql; `name_eq` is "NAME="): at its
 * start or after a '&', its value up to the next '&'; 0 when there is none. */
static int query_param(span query, const char *name_eq, span *value) {
    size_t k = strlen(name_eq);
    const char *from = NULL, *qe = query.p + query.n;
    if (query.n >= k && memcmp(query.p, name_eq, k) == 0) {
        from = query.p + k;
    } else {
        for (const char *p = query.p; p + k + 1 <= qe; p++)
            if (p[0] == '&' && memcmp(p + 1, name_eq, k) == 0) {
                from = p + k + 1;
                break;
            }
    }
    if (!from) return 0;
    const char *amp = memchr(from, '&', (size_t)(qe - from));
    *value = (span){from, (size_t)((amp ? amp : qe) - from)};
    return 1;
}

/* A landing token "{n}.{delivery}{recipient}{SIG}" (routes.split_token, routed_sql's tl_ok):
 * 1 with its parts, 0 when it is not shaped like one. */
static int split_token(span tl, span *delivery, span *recipient, span *sig) {
    size_t d = 0;
    while (d < tl.n && tl.p[d] >= '0' && tl.p[d] <= '9') d++;
    if (d < 1 || d > 3 || d == tl.n || tl.p[d] != '.') return 0;
    span rest = {tl.p + d + 1, tl.n - d - 1};
    if (rest.n < 1) return 0;
    for (size_t k = 0; k < rest.n; k++)
        if (!id_char((unsigned char)rest.p[k])) return 0;
    int len;
    if (!digits(tl.p, (int)d, &len) || len < 1 || len > 128) return 0;
    if (rest.n < (size_t)len + 22 + 1 || rest.n - (size_t)len - 22 > 128) return 0;
    *delivery = (span){rest.p, (size_t)len};
    *recipient = (span){rest.p + len, rest.n - (size_t)len - 22};
    *sig = (span){rest.p + rest.n - 22, 22};
    return 1;
}

/* A text value in `extra`'s JSON: quoted, with to_json's escapes */
static int extra_string(growbuf *x, const char *s, size_t n) {
    return gb_put(x, "\"", 1) || json_escape_into(x, s, n) || gb_put(x, "\"", 1);
}

/* `extra`'s JSON object, its members written after `start`: closed, or NULL when it has none */
static int extra_close(output *o, size_t i, size_t start, int members) {
    growbuf *x = &o->col[C_EXTRA].data;
    if (!members) {
        x->len = start;
        col_null(&o->col[C_EXTRA], i);
        return 0;
    }
    if (gb_put(x, "}", 1)) return -1;
    col_seal(&o->col[C_EXTRA], i, 1);
    return 0;
}

/* The variables after the last quote (formats._plan_segment's words): " V" alone is everything
 * after the space; " V1 V2 ..." is split at each space, each word one variable's (an empty
 * word where two spaces meet), but the elastic variable, which takes the words in between the
 * others' (its spaces too). 0 when the text does not match. */
static int unquoted_values(const plan *pl, const char *s, size_t n, span *out) {
    int k = pl->n_extra - pl->first_word;
    if (n == 0 || s[0] != ' ') return 0;
    s++, n--;
    if (k == 1) {
        out[0] = (span){s, n};
        return 1;
    }
    int e = pl->elastic;
    int left = e < 0 ? k : e; /* words taken from the left; the others from the right */
    const char *p = s, *end = s + n;
    for (int j = 0; j < left; j++) {
        const char *sp = j < k - 1 ? memchr(p, ' ', (size_t)(end - p)) : NULL;
        if (j < k - 1 && !sp) return 0;
        if (j == k - 1 && memchr(p, ' ', (size_t)(end - p))) return 0; /* more words than variables */
        const char *stop = j < k - 1 ? sp : end;
        out[j] = (span){p, (size_t)(stop - p)};
        p = stop + (j < k - 1);
    }
    if (e < 0) return 1;
    const char *r = end;
    for (int j = k - 1; j > e; j--) {
        const char *sp = r;
        while (sp > p && sp[-1] != ' ') sp--;
        if (sp == p) return 0; /* no space left before it: fewer words than variables */
        out[j] = (span){sp, (size_t)(r - sp)};
        r = sp - 1;
    }
    out[e] = (span){p, (size_t)(r - p)};
    return 1;
}

/* The gap's text `s` (n bytes): 1 when it matches, its variable's value then in out[var]. As
 * formats._take_affixed checks it: starts with pre, ends with post, at least as long as both;
 * the value is what lies between. */
static int gap_value(const gap *g, const char *s, size_t n, span *out) {
    if (g->var < 0) return n == g->npre && (n == 0 || memcmp(s, g->pre, n) == 0);
    if (n < g->npre + g->npost || (g->npre && memcmp(s, g->pre, g->npre) != 0) ||
        (g->npost && memcmp(s + n - g->npost, g->post, g->npost) != 0))
        return 0;
    out[g->var] = (span){s + g->npre, n - g->npre - g->npost};
    return 1;
}

/* list_match: the text after the last quote against the plan's words as formats._take_regexp's
 * regular expression, for words whose variables are plain ([^ ]*) or upstream lists ([^ ]*
 * elements joined by ", " or " : "), none lazy: the first match RE2 finds (its leftmost-first
 * submatches are a backtracking search's: each variable's longest text first, shorter ones after,
 * a list's elements likewise), found by that search, each state's failure remembered so that it
 * is tried once, and its steps counted: a line of more than MATCH_MAX bytes there or more than
 * MATCH_STEPS steps is left to the SQL. */
typedef struct {
    const plan *pl;
    const char *s;
    size_t n;
    int steps;
    span cap[MAX_WORDS];
    uint8_t failed[MAX_WORDS][MATCH_MAX + 1]; /* bit 1: the variable from there, 2: a list element, 4: after one */
} matcher;

static int m_rest(matcher *m, int g, size_t pos);

static size_t m_run(const matcher *m, size_t pos) { /* [^ ]* from pos */
    const char *sp = memchr(m->s + pos, ' ', m->n - pos);
    return sp ? (size_t)(sp - (m->s + pos)) : m->n - pos;
}

static int m_elem(matcher *m, int g, size_t start, size_t pos);

/* after a list element ending at p: another (", " or " : " then an element), else the rest */
static int m_star(matcher *m, int g, size_t start, size_t p) {
    if (++m->steps > MATCH_STEPS) return -1;
    if (m->failed[g][p] & 4) return 0;
    int r;
    if (p + 2 <= m->n && m->s[p] == ',' && m->s[p + 1] == ' ' && (r = m_elem(m, g, start, p + 2))) return r;
    if (p + 3 <= m->n && m->s[p] == ' ' && m->s[p + 1] == ':' && m->s[p + 2] == ' ' &&
        (r = m_elem(m, g, start, p + 3)))
        return r;
    if ((r = m_rest(m, g + 1, p))) {
        if (r > 0) m->cap[g] = (span){m->s + start, p - start};
        return r;
    }
    m->failed[g][p] |= 4;
    return 0;
}

static int m_elem(matcher *m, int g, size_t start, size_t pos) {
    if (++m->steps > MATCH_STEPS) return -1;
    if (m->failed[g][pos] & 2) return 0;
    for (size_t l = m_run(m, pos) + 1; l-- > 0;) {
        int r = m_star(m, g, start, pos + l);
        if (r) return r;
    }
    m->failed[g][pos] |= 2;
    return 0;
}

static int m_group(matcher *m, int g, size_t pos) {
    if (++m->steps > MATCH_STEPS) return -1;
    if (m->failed[g][pos] & 1) return 0;
    int r = 0;
    if (m->pl->prog[g].kind == WORD_LIST) {
        r = m_elem(m, g, pos, pos);
    } else {
        for (size_t l = m_run(m, pos) + 1; l-- > 0;) {
            if ((r = m_rest(m, g + 1, pos + l))) {
                if (r > 0) m->cap[g] = (span){m->s + pos, l};
                break;
            }
        }
    }
    if (r) return r;
    m->failed[g][pos] |= 1;
    return 0;
}

/* step g's literal at pos, then its variable (or the end) */
static int m_rest(matcher *m, int g, size_t pos) {
    const pstep *st = &m->pl->prog[g];
    if (m->n - pos < st->nlit || (st->nlit && memcmp(m->s + pos, st->lit, st->nlit) != 0)) return 0;
    pos += st->nlit;
    if (st->kind < 0) return pos == m->n;
    return m_group(m, g, pos);
}

/* 1: matched, the variables' values in out; 0: no match; -1: the SQL's */
static int list_match(const plan *pl, const char *s, size_t n, span *out) {
    if (!pl->n_prog || n > MATCH_MAX) return -1;
    matcher *m = malloc(sizeof *m);
    if (!m) return -1;
    m->pl = pl, m->s = s, m->n = n, m->steps = 0;
    memset(m->failed, 0, sizeof m->failed);
    int r = m_rest(m, 0, 0);
    if (r > 0)
        for (int g = 0; g + 1 < pl->n_prog; g++) out[pl->prog[g].var] = m->cap[g];
    free(m);
    return r;
}

/* The text after the last quote as the plan's words (formats._plan_segment's words): split at
 * each space (an empty word where two spaces meet), as many words as the template, but the word
 * whose variable may hold spaces (word_e), which takes the words between the others'; each word
 * its text around its variable (gap_value). 1 when the text matches, 0 when it does not, -1 to
 * defer the line. With several variables that may hold spaces (word_e -2), the SQL matches a
 * regular expression, whose spaces are the template's: a line with as many words as the template
 * has the words' reading (no value then holds a space, so each word is its template's), one with
 * fewer does not match; one with more is list_match's, or the SQL's. */
static int tail_words(const plan *pl, const char *s, size_t n, span *out) {
    int k = pl->n_words, e = pl->word_e >= 0 ? pl->word_e : -1;
    span w[MAX_WORDS];
    const char *p = s, *end = s + n;
    int left = e < 0 ? k : e; /* words taken from the left; the others from the right */
    for (int j = 0; j < left; j++) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (j == k - 1) {
            if (sp) return pl->word_e == -2 ? list_match(pl, s, n, out) : 0; /* more words than the template */
            w[j] = (span){p, (size_t)(end - p)};
        } else {
            if (!sp) return 0; /* fewer */
            w[j] = (span){p, (size_t)(sp - p)};
            p = sp + 1;
        }
    }
    if (e >= 0) {
        const char *r = end;
        for (int j = k - 1; j > e; j--) {
            const char *sp = r;
            while (sp > p && sp[-1] != ' ') sp--;
            if (sp == p) return 0; /* no space left before it: fewer words */
            w[j] = (span){sp, (size_t)(r - sp)};
            r = sp - 1;
        }
        w[e] = (span){p, (size_t)(r - p)};
    }
    for (int j = 0; j < k; j++)
        if (!gap_value(&pl->words[j], w[j].p, w[j].n, out)) return 0;
    return 1;
}

/* A text value (nginx writes "-" for empty): NULL, or decoded into `out` when the line has a
 * backslash. Returns -1 on allocation failure, 0 for NULL, 1 for a value. */
static int text_value(output *o, growbuf *out, span raw, int decode, int line_has_backslash) {
    if (is_dash(raw)) return 0;
    if (decode && line_has_backslash) {
        if (decode_into(out, &o->tk, raw.p, raw.n)) return -1;
    } else if (gb_put(out, raw.p, raw.n)) {
        return -1;
    }
    return 1;
}

static int text_column(output *o, int c, size_t i, span raw, int decode, int bs) {
    column *col = &o->col[c];
    growbuf *out = col->is_dict ? &o->scratch : &col->data;
    if (col->is_dict) o->scratch.len = 0;
    int r = text_value(o, out, raw, decode, bs);
    if (r < 0) return -1;
    if (r == 0) {
        col_null(col, i);
        return 0;
    }
    if (col->is_dict) return dict_put(col, i, o->scratch.p, o->scratch.len);
    col_seal(col, i, 1);
    return 0;
}

/* A page tag's columns (routed_sql and the engine's sig_status): its tag, and the delivery and
 * recipient of its landing token; "missing" without a token, "invalid" with one not shaped like
 * a token (no delivery nor recipient then) or whose signature is not that of "/w/D/R". */
static int page_row(const plan *pl, output *o, size_t i, span tag, int has_query, span query) {
    span tl = {0}, delivery = {0}, recipient = {0}, sig = {0};
    int has_tl = has_query && query_param(query, "tl=", &tl) && tl.n > 0;
    int ok = has_tl && split_token(tl, &delivery, &recipient, &sig);
    if (col_str(&o->col[C_KIND], i, "page", 4) || col_str(&o->col[C_LINK], i, tag.p, tag.n)) return -1;
    if (ok) {
        if (col_str(&o->col[C_DELIVERY], i, delivery.p, delivery.n) ||
            col_str(&o->col[C_RECIPIENT], i, recipient.p, recipient.n))
            return -1;
    } else {
        col_null(&o->col[C_DELIVERY], i);
        col_null(&o->col[C_RECIPIENT], i);
    }
    const char *verdict = !has_tl ? "missing" : !ok ? "invalid" : !pl->verify ? "unchecked" : "invalid";
    if (ok && pl->verify) { /* the signature of routes.token_text: "/w/{delivery}/{recipient}" */
        char text[3 + 128 + 1 + 128], want[22];
        size_t len = 0;
        memcpy(text, "/w/", 3), len += 3;
        memcpy(text + len, delivery.p, delivery.n), len += delivery.n;
        text[len++] = '/';
        memcpy(text + len, recipient.p, recipient.n), len += recipient.n;
        for (int k = 0; k < pl->n_keys; k++) {
            expected_sig(&pl->hmac[k], text, len, want);
            if (memcmp(want, sig.p, 22) == 0) {
                verdict = "valid";
                break;
            }
        }
    }
    return col_str(&o->col[C_SIG], i, verdict, strlen(verdict));
}

/* The columns from the request line on (its text in o->scratch2 when `has_request`): method,
 * path, query, the route, the ids and the signature's verdict. */
static int request_columns(const plan *pl, output *o, size_t i, int has_request, int opted_out) {
    /* the request line: method, target (path ? query); protocol is not kept */
    span method = {0}, target = {0};
    int has_method = 0, has_target = 0;
    if (has_request) {
        const char *rq = o->scratch2.p;
        size_t rn = o->scratch2.len;
        const char *first = rn ? memchr(rq, ' ', rn) : NULL;
        if (first) {
            const char *last = rq + rn - 1;
            while (*last != ' ') last--;
            method = (span){rq, (size_t)(first - rq)};
            has_method = 1;
            /* one space: "GET /x" (HTTP/0.9); more: the target runs to the last space */
            const char *tend = last == first ? rq + rn : last;
            target = (span){first + 1, (size_t)(tend - first - 1)};
            has_target = 1;
        }
    }
    if (has_method) {
        if (col_str(&o->col[C_METHOD], i, method.p, method.n)) return -1;
    } else {
        col_null(&o->col[C_METHOD], i);
    }
    span path = {0}, query = {0};
    int has_query = 0;
    if (has_target) {
        const char *qm = memchr(target.p, '?', target.n);
        path = (span){target.p, qm ? (size_t)(qm - target.p) : target.n};
        if (qm) {
            query = (span){qm + 1, (size_t)(target.p + target.n - qm - 1)};
            has_query = 1;
        }
        if (col_str(&o->col[C_PATH], i, path.p, path.n)) return -1;
    } else {
        col_null(&o->col[C_PATH], i);
    }
    if (has_query) {
        if (col_str(&o->col[C_QUERY], i, query.p, query.n)) return -1;
    } else {
        col_null(&o->col[C_QUERY], i);
    }

    /* the route */
    span ids[3];
    char letter = has_target ? route(path, ids) : 0;
    const char *kind = NULL;
    /* GET, and HEAD (a machine's: stored so that it is classified), on every route; POST on /u/ */
    int get_or_head = span_eq(method, "GET") || span_eq(method, "HEAD");
    if (letter == 'o' && get_or_head) kind = "open";
    if (letter == 'c' && get_or_head) kind = "click";
    if (letter == 'm' && get_or_head) kind = "mirror";
    if (letter == 'u' && (get_or_head || span_eq(method, "POST"))) kind = "unsubscribe";
    /* GET only; a browser that opted out of web tracking: not a hit */
    if (letter == 'w' && span_eq(method, "GET") && !opted_out) kind = "page";
    if (!kind) {
        for (int c = C_KIND; c <= C_SIG; c++) col_null(&o->col[c], i);
        return 0;
    }
    if (letter == 'w') return page_row(pl, o, i, ids[0], has_query, query);
    span recipient = letter == 'c' ? ids[2] : ids[1];
    if (col_str(&o->col[C_KIND], i, kind, strlen(kind)) || col_str(&o->col[C_DELIVERY], i, ids[0].p, ids[0].n) ||
        col_str(&o->col[C_RECIPIENT], i, recipient.p, recipient.n))
        return -1;
    if (letter == 'c') {
        if (col_str(&o->col[C_LINK], i, ids[1].p, ids[1].n)) return -1;
    } else {
        col_null(&o->col[C_LINK], i);
    }

    /* the signature: ?s=SIG or &s=SIG, up to the next '&' */
    const char *verdict = "unchecked";
    if (pl->verify) {
        span sig = {0};
        int has_sig = has_query && query_param(query, "s=", &sig);
        if (!has_sig || sig.n == 0) {
            verdict = "missing";
        } else if (sig.n != 22) {
            verdict = "invalid";
        } else {
            char want[22];
            verdict = "invalid";
            /* the next key only when this one fails: one key's cost for every hit signed with the first */
            for (int k = 0; k < pl->n_keys; k++) {
                expected_sig(&pl->hmac[k], path.p, path.n, want);
                if (memcmp(want, sig.p, 22) == 0) {
                    verdict = "valid";
                    break;
                }
            }
        }
    }
    return col_str(&o->col[C_SIG], i, verdict, strlen(verdict));
}

static int parse_line(const plan *pl, output *o, size_t i, const char *s, size_t n) {
    if (n == 0) return quarantine(o, i, "empty line", s, 0);
    const char *const mismatch = "does not match log format";
    /* _q = string_split(line, '"'): exactly the format's quotes */
    int want_quotes = pl->combined ? 6 + 2 * pl->n_quoted : 2;
    const char *q[2 * MAX_EXTRA + 8];
    int nq = 0;
    for (const char *p = memchr(s, '"', n); p; p = memchr(p + 1, '"', (size_t)(s + n - p - 1))) {
        if (nq == want_quotes) return quarantine(o, i, mismatch, s, n);
        q[nq++] = p;
        if (p == s + n - 1) break;
    }
    if (nq != want_quotes) return quarantine(o, i, mismatch, s, n);
    size_t e = (size_t)(q[0] - s); /* _q[1] is s[0, e) */
    if (e == 0 || s[e - 1] != ' ') return quarantine(o, i, mismatch, s, n);
    e--; /* the space before the opening quote */
    span addr, user = {0}, time, extra[MAX_EXTRA];
    if (pl->msec) {
        /* _q[1] = 'MSEC ADDR ': exactly three words, the last '' */
        const char *sp = memchr(s, ' ', e);
        if (!sp || memchr(sp + 1, ' ', (size_t)(s + e - sp - 1))) return quarantine(o, i, mismatch, s, n);
        time = (span){s, (size_t)(sp - s)};
        addr = (span){sp + 1, (size_t)(s + e - sp - 1)};
    } else {
        /* _q[1] = 'LEAD... ADDR - USER... [TIME ZONE] ': a word per leading variable, then at
         * least 6 words, the 2nd '-', the last '' (with [$time_iso8601], 'ADDR - USER... [TIME] ':
         * at least 5 words). h: the line after the leading words, he: e within it */
        size_t base = 0;
        for (int k = 0; k < pl->n_lead; k++) {
            const char *sp = base <= e ? memchr(s + base, ' ', e + 1 - base) : NULL;
            if (!sp) return quarantine(o, i, mismatch, s, n);
            extra[k] = (span){s + base, (size_t)(sp - s) - base};
            base = (size_t)(sp - s) + 1;
        }
        if (base > e) return quarantine(o, i, mismatch, s, n);
        const char *h = s + base;
        size_t he = e - base;
        const char *p1 = memchr(h, ' ', he + 1);
        size_t sp1 = (size_t)(p1 - h);
        const char *p2 = sp1 < he ? memchr(h + sp1 + 1, ' ', he - sp1) : NULL;
        size_t sp2 = p2 ? (size_t)(p2 - h) : he, r1 = he, r2;
        while (r1 > 0 && h[r1 - 1] != ' ') r1--; /* r1: just after the last space before he */
        if (r1 == 0 || r1 - 1 <= sp2) return quarantine(o, i, mismatch, s, n);
        r1--;
        r2 = r1;
        if (!pl->iso) {
            while (r2 > 0 && h[r2 - 1] != ' ') r2--;
            if (r2 == 0 || r2 - 1 <= sp2) return quarantine(o, i, mismatch, s, n);
            r2--; /* spaces at sp1 < sp2 < r2 < r1 < e: six words or more */
        } /* else the time is the last word: spaces at sp1 < sp2 < r2 = r1 < e, five words or more */
        if (sp2 - sp1 != 2 || h[sp1 + 1] != '-') return quarantine(o, i, mismatch, s, n);
        addr = (span){h, sp1};
        user = (span){h + sp2 + 1, r2 - sp2 - 1};
        time = (span){h + r2 + 1, he - r2 - 1};
    }
    span request = {q[0] + 1, (size_t)(q[1] - q[0] - 1)};
    /* _q[3] = ' STATUS BYTES ' (combined) or ' STATUS BYTES' (common, the end of the line) */
    const char *s3 = q[1] + 1, *e3 = pl->combined ? q[2] : s + n;
    size_t n3 = (size_t)(e3 - s3);
    span status_raw, bytes_raw;
    {
        if (n3 < 1 || s3[0] != ' ') return quarantine(o, i, mismatch, s, n);
        const char *mid = n3 > 1 ? memchr(s3 + 1, ' ', n3 - 1) : NULL;
        if (!mid) return quarantine(o, i, mismatch, s, n);
        const char *stop = e3;
        if (pl->combined) {
            if (mid == e3 - 1 || e3[-1] != ' ') return quarantine(o, i, mismatch, s, n);
            stop = e3 - 1;
        }
        if (memchr(mid + 1, ' ', (size_t)(stop - mid - 1))) return quarantine(o, i, mismatch, s, n);
        status_raw = (span){s3 + 1, (size_t)(mid - s3 - 1)};
        bytes_raw = (span){mid + 1, (size_t)(stop - mid - 1)};
    }
    span referer = {0}, agent = {0};
    if (pl->combined) {
        /* "REFERER" "AGENT"[ "EXTRA"]...: a single space between, or the plan's gaps between the
         * extras; after the last quote, nothing, the unquoted variables (unquoted_values) or the
         * last gap */
        int nvals = 2 + pl->n_quoted;
        for (int k = 0; k < nvals; k++) {
            const char *open = q[2 + 2 * k], *close = q[3 + 2 * k];
            span v = {open + 1, (size_t)(close - open - 1)};
            if (k == 0)
                referer = v;
            else if (k == 1)
                agent = v;
            else
                extra[pl->qidx[k - 2]] = v;
            if (k >= 2 && pl->n_gaps) {
                const char *after = q[1 + 2 * k] + 1;
                if (!gap_value(&pl->gaps[k - 2], after, (size_t)(open - after), extra))
                    return quarantine(o, i, mismatch, s, n);
            } else if (k > 0 && !(open - q[1 + 2 * k] == 2 && open[-1] == ' ')) {
                return quarantine(o, i, mismatch, s, n);
            }
        }
        const char *rest = q[want_quotes - 1] + 1; /* after the last quote */
        if (pl->n_gaps) {
            if (!gap_value(&pl->gaps[pl->n_quoted], rest, (size_t)(s + n - rest), extra))
                return quarantine(o, i, mismatch, s, n);
        } else if (pl->n_words) {
            int r = tail_words(pl, rest, (size_t)(s + n - rest), extra);
            if (r < 0) return defer_row(o, i);
            if (r == 0) return quarantine(o, i, mismatch, s, n);
        } else if (pl->first_word == pl->n_extra) {
            if (rest != s + n) return quarantine(o, i, mismatch, s, n);
        } else if (!unquoted_values(pl, rest, (size_t)(s + n - rest), extra + pl->first_word)) {
            return quarantine(o, i, mismatch, s, n);
        }
    }
    /* the reasons, in formats.py's order; what DuckDB might read otherwise is deferred */
    int64_t ts, bytes = 0;
    int status;
    if (!(pl->msec  ? msec_time(time, &ts)
          : pl->iso ? time.n == 27 && time.p[0] == '[' && time.p[26] == ']' &&
                          time_iso8601((span){time.p + 1, 25}, &ts)
                    : time_local(time, &ts)))
        return defer_row(o, i);
    if (status_raw.n != 3) return quarantine(o, i, "bad status", s, n);
    if (!digits(status_raw.p, 3, &status)) return defer_row(o, i);
    int has_bytes = !is_dash(bytes_raw);
    if (has_bytes && !plain_bigint(bytes_raw, &bytes)) return defer_row(o, i);
    /* no address: the SQL takes it from $http_x_forwarded_for (nginx always writes one) */
    if (pl->has_xff && is_dash(addr)) return defer_row(o, i);

    /* a parsed line */
    int bs = memchr(s, '\\', n) != NULL;
    o->scratch2.len = 0;
    int r = text_value(o, &o->scratch2, request, 1, bs);
    if (r < 0) return -1;
    col_null(&o->col[C_REASON], i);
    col_null(&o->col[C_LINE], i);
    col_i64(&o->col[C_TS], i, ts);
    col_i16(&o->col[C_STATUS], i, (int16_t)status);
    if (has_bytes)
        col_i64(&o->col[C_BYTES], i, bytes);
    else
        col_null(&o->col[C_BYTES], i);
    if (is_dash(addr)) {
        col_null(&o->col[C_IP], i);
    } else if (col_str(&o->col[C_IP], i, addr.p, addr.n)) {
        return -1;
    }
    if (pl->combined) {
        if (text_column(o, C_REFERER, i, referer, 1, bs) || text_column(o, C_UA, i, agent, 1, bs)) return -1;
    } else {
        col_null(&o->col[C_REFERER], i);
        col_null(&o->col[C_UA], i);
    }

    /* uid: $uid_got, else $uid_set, after its '=' */
    int uid_done = 0;
    for (int pass = ROLE_UID_GOT; pass <= ROLE_UID_SET && !uid_done; pass++) {
        for (int k = 0; k < pl->n_extra && !uid_done; k++) {
            if (pl->role[k] != pass) continue;
            o->scratch.len = 0;
            int r = text_value(o, &o->scratch, extra[k], 1, bs);
            if (r < 0) return -1;
            if (r == 0) continue;
            /* an empty value leaves scratch without a buffer: memchr must not see its NULL */
            const char *eq = o->scratch.len ? memchr(o->scratch.p, '=', o->scratch.len) : NULL;
            size_t from = eq ? (size_t)(eq - o->scratch.p) + 1 : 0;
            if (col_str(&o->col[C_UID], i, o->scratch.p + from, o->scratch.len - from)) return -1;
            uid_done = 1;
        }
    }
    if (!uid_done) col_null(&o->col[C_UID], i);

    /* extra: {"lead": ..., "remote_user": ..., "var": ...} of the values present, in the format's
     * order, NULL when none is (the msec layout has no $remote_user); and whether a variable says
     * the browser opted out */
    int opted_out = 0;
    {
        growbuf *x = &o->col[C_EXTRA].data;
        size_t start = x->len;
        int members = 0;
        for (int j = 0; j <= pl->n_extra; j++) {
            /* the leading variables, then $remote_user (k = -1), then the others */
            int k = j < pl->n_lead ? j : j == pl->n_lead ? -1 : j - 1;
            if (k < 0 && pl->msec) continue;
            if (k >= 0 && pl->role[k] != ROLE_EXTRA && pl->role[k] != ROLE_XFF) continue;
            o->scratch.len = 0;
            int r = text_value(o, &o->scratch, k < 0 ? user : extra[k], k < 0 || pl->decode[k], bs);
            if (r < 0) return -1;
            if (r == 0) continue;
            if (k >= 0 && pl->optout[k] == OPTOUT_COOKIE && o->scratch.len == 1 && o->scratch.p[0] == '1')
                opted_out = 1;
            if (k >= 0 && pl->optout[k] == OPTOUT_HEADER && cookie_opted_out(o->scratch.p, o->scratch.len))
                opted_out = 1;
            const char *key = k < 0 ? "\"remote_user\":" : pl->key[k];
            size_t key_len = k < 0 ? 14 : pl->key_len[k];
            if (gb_put(x, members ? "," : "{", 1) || gb_put(x, key, key_len) ||
                extra_string(x, o->scratch.p, o->scratch.len))
                return -1;
            members++;
        }
        if (extra_close(o, i, start, members)) return -1;
    }

    return request_columns(pl, o, i, r > 0, opted_out);
}

/* ------------------------------------------------------------------ JSON lines */

/* formats._JSON_CANONICAL_KEYS, in its order (fastpath checks it), then $http_x_forwarded_for,
 * which feeds the address but stays in `extra` (formats._json_lines_layers) */
enum {
    J_REMOTE_ADDR, J_TIME_LOCAL, J_TIME_ISO8601, J_MSEC, J_REQUEST, J_REQUEST_METHOD, J_REQUEST_URI, J_URI,
    J_ARGS, J_IS_ARGS, J_SERVER_PROTOCOL, J_STATUS, J_BODY_BYTES_SENT, J_BYTES_SENT, J_HTTP_REFERER,
    J_HTTP_USER_AGENT, J_UID_GOT, J_UID_SET, J_CANONICAL, J_XFF = J_CANONICAL, J_KNOWN
};
static const char *const JSON_KEYS[J_KNOWN] = {
    "remote_addr", "time_local", "time_iso8601", "msec", "request", "request_method", "request_uri", "uri",
    "args", "is_args", "server_protocol", "status", "body_bytes_sent", "bytes_sent", "http_referer",
    "http_user_agent", "uid_got", "uid_set", "http_x_forwarded_for"};
static size_t JSON_KEY_LEN[J_KNOWN]; /* their lengths, set when the module loads */
#define JSON_MAX_PAIRS 64
/* routes.OPTED_OUT_SQL's "$cookie_tl_optout", read from `extra` (fastpath checks the name) */
#define JSON_OPTOUT_KEY "cookie_tl_optout"

static inline int json_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }

/* Strict UTF-8 of one sequence at p (its length), 0 when not well-formed: what DuckDB's JSON
 * reader might judge otherwise is deferred. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if ((size_t)(end - p) <= need || p[1] < lo || p[1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
        if (p[k] < 0x80 || p[k] > 0xBF) return 0;
    return need + 1;
}

static int hex4(const char *p, unsigned *v) {
    unsigned x = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval((unsigned char)p[k]);
        if (h < 0) return 0;
        x = x * 16 + (unsigned)h;
    }
    *v = x;
    return 1;
}

/* A JSON string at *pp (its opening quote): its value, pointing into the line when it has no
 * escape, else decoded at the end of `arena` (reserved: never moves). 0 for what is deferred:
 * a control character, malformed UTF-8, \u0000, a lone surrogate, an unknown escape. */
static int json_string(const char **pp, const char *end, growbuf *arena, span *out) {
    const char *p = *pp + 1, *start = p;
    int escaped = 0;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) return 0;
        if (c == '\\') {
            escaped = 1;
            p += 2;
        } else if (c >= 0x80) {
            size_t k = utf8_len((const unsigned char *)p, (const unsigned char *)end);
            if (!k) return 0;
            p += k;
        } else {
            p++;
        }
    }
    if (p >= end) return 0;
    *pp = p + 1;
    if (!escaped) {
        *out = (span){start, (size_t)(p - start)};
        return 1;
    }
    char *w = arena->p + arena->len, *w0 = w;
    for (const char *r = start; r < p;) {
        if (*r != '\\') {
            *w++ = *r++;
            continue;
        }
        char e = r[1];
        r += 2;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p - r < 4 || !hex4(r, &cp)) return 0;
            r += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return 0;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p - r < 6 || r[0] != '\\' || r[1] != 'u' || !hex4(r + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return 0;
                r += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) return 0;
            if (cp < 0x80) {
                *w++ = (char)cp;
            } else if (cp < 0x800) {
                *w++ = (char)(0xC0 | (cp >> 6)), *w++ = (char)(0x80 | (cp & 63));
            } else if (cp < 0x10000) {
                *w++ = (char)(0xE0 | (cp >> 12)), *w++ = (char)(0x80 | ((cp >> 6) & 63));
                *w++ = (char)(0x80 | (cp & 63));
            } else {
                *w++ = (char)(0xF0 | (cp >> 18)), *w++ = (char)(0x80 | ((cp >> 12) & 63));
                *w++ = (char)(0x80 | ((cp >> 6) & 63)), *w++ = (char)(0x80 | (cp & 63));
            }
            break;
        }
        default: return 0;
        }
    }
    arena->len += (size_t)(w - w0);
    *out = (span){w0, (size_t)(w - w0)};
    return 1;
}

typedef struct {
    span key, value;
    int number; /* a bare integer, written back as it is */
    int known;  /* its index in JSON_KEYS, or -1 */
} json_pair;

/* A value's text as formats._json_lines_layers reads it: nullif(nullif(value, ''), '-') */
static inline int json_text(const json_pair *pr, span *t) {
    if (!pr || pr->value.n == 0 || is_dash(pr->value)) return 0;
    *t = pr->value;
    return 1;
}

/* One JSON line ({"remote_addr": ..., "time_local": ..., ...}, keys named after the nginx
 * variables, in any order): the rows of formats._json_lines_layers. Only a flat object of
 * strings and plain integers is read here, each key once; anything else (and times in forms
 * nginx never writes, an address only from the forwarded-for list, a request without method
 * or target when another variable could give it) goes to the SQL. */
static int parse_json_line(const plan *pl, output *o, size_t i, const char *s, size_t n) {
    if (n == 0) return quarantine(o, i, "empty line", s, 0);
    json_pair pairs[JSON_MAX_PAIRS];
    const json_pair *known[J_KNOWN] = {0};
    int np = 0;
    /* the decoded values have a buffer of their own: text_column and request_columns write
     * the columns' values through scratch and scratch2 while the spans into it are read */
    o->arena.len = 0;
    if (gb_reserve(&o->arena, n)) return -1; /* decoded values: never longer than the line */
    const char *p = s, *end = s + n;
    while (p < end && json_ws(*p)) p++;
    if (p == end || *p != '{') return defer_row(o, i);
    p++;
    while (p < end && json_ws(*p)) p++;
    if (p < end && *p == '}') return defer_row(o, i); /* {}: missing timestamp, the SQL says */
    for (;;) {
        if (np == JSON_MAX_PAIRS || p == end || *p != '"') return defer_row(o, i);
        json_pair *pr = &pairs[np];
        const char *k0 = ++p;
        while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            p++;
        if (p == end || *p != '"' || p == k0) return defer_row(o, i);
        pr->key = (span){k0, (size_t)(p - k0)};
        p++;
        while (p < end && json_ws(*p)) p++;
        if (p == end || *p != ':') return defer_row(o, i);
        p++;
        while (p < end && json_ws(*p)) p++;
        if (p == end) return defer_row(o, i);
        if (*p == '"') {
            if (!json_string(&p, end, &o->arena, &pr->value)) return defer_row(o, i);
            pr->number = 0;
        } else {
            const char *v0 = p;
            if (*p == '-') p++;
            const char *d0 = p;
            while (p < end && *p >= '0' && *p <= '9') p++;
            size_t nd = (size_t)(p - d0);
            if (nd == 0 || nd > 18 || (nd > 1 && *d0 == '0') || (d0 > v0 && *d0 == '0')) return defer_row(o, i);
            pr->value = (span){v0, (size_t)(p - v0)};
            pr->number = 1;
        }
        pr->known = -1;
        for (int k = 0; k < J_KNOWN && pr->known < 0; k++)
            if (pr->key.n == JSON_KEY_LEN[k] && memcmp(pr->key.p, JSON_KEYS[k], pr->key.n) == 0) pr->known = k;
        for (int m = 0; m < np; m++) /* a key given twice: which one counts is the SQL's to say */
            if (pairs[m].key.n == pr->key.n && memcmp(pairs[m].key.p, pr->key.p, pr->key.n) == 0)
                return defer_row(o, i);
        if (pr->known >= 0) known[pr->known] = pr;
        np++;
        while (p < end && json_ws(*p)) p++;
        if (p == end) return defer_row(o, i);
        if (*p == '}') break;
        if (*p != ',') return defer_row(o, i);
        p++;
        while (p < end && json_ws(*p)) p++;
    }
    p++;
    while (p < end && json_ws(*p)) p++;
    if (p != end) return defer_row(o, i);

    /* the reasons, in formats.py's order (the JSON is valid: not 'invalid JSON') */
    span t_msec = {0}, t_local = {0}, t_iso = {0}, t = {0};
    int has_msec = json_text(known[J_MSEC], &t_msec), has_local = json_text(known[J_TIME_LOCAL], &t_local);
    int has_iso = json_text(known[J_TIME_ISO8601], &t_iso);
    if (!has_msec && !has_iso && !has_local) return quarantine(o, i, "missing timestamp", s, n);
    /* the first present of $msec, $time_iso8601, $time_local (formats._TIME_VARS) */
    int64_t ts, bytes = 0;
    if (has_msec) {
        if (!msec_time(t_msec, &ts)) return defer_row(o, i);
    } else if (has_iso) {
        if (!time_iso8601(t_iso, &ts)) return defer_row(o, i);
    } else {
        char bracketed[28];
        if (t_local.n != 26) return defer_row(o, i);
        bracketed[0] = '[', bracketed[27] = ']';
        memcpy(bracketed + 1, t_local.p, 26);
        if (!time_local((span){bracketed, 28}, &ts)) return defer_row(o, i);
    }
    int status = 0, has_status = json_text(known[J_STATUS], &t);
    if (has_status) {
        if (t.n != 3) return quarantine(o, i, "bad status", s, n);
        if (!digits(t.p, 3, &status)) return defer_row(o, i);
    }
    span b_raw = {0};
    int has_bytes = json_text(known[J_BODY_BYTES_SENT], &b_raw) || json_text(known[J_BYTES_SENT], &b_raw);
    if (has_bytes && !plain_bigint(b_raw, &bytes)) return defer_row(o, i);
    span addr = {0};
    int has_addr = json_text(known[J_REMOTE_ADDR], &addr);
    if (!has_addr && json_text(known[J_XFF], &t)) return defer_row(o, i);
    span request = {0};
    int has_request = json_text(known[J_REQUEST], &request);
    /* method and target come from the request line when it has a space, else from these */
    if (!(has_request && memchr(request.p, ' ', request.n)) &&
        (json_text(known[J_REQUEST_METHOD], &t) || json_text(known[J_REQUEST_URI], &t) || json_text(known[J_URI], &t)))
        return defer_row(o, i);

    /* a parsed line */
    col_null(&o->col[C_REASON], i);
    col_null(&o->col[C_LINE], i);
    col_i64(&o->col[C_TS], i, ts);
    if (has_status)
        col_i16(&o->col[C_STATUS], i, (int16_t)status);
    else
        col_null(&o->col[C_STATUS], i);
    if (has_bytes)
        col_i64(&o->col[C_BYTES], i, bytes);
    else
        col_null(&o->col[C_BYTES], i);
    if (!has_addr)
        col_null(&o->col[C_IP], i);
    else if (col_str(&o->col[C_IP], i, addr.p, addr.n))
        return -1;
    span none = {"-", 1};
    if (!json_text(known[J_HTTP_REFERER], &t)) t = none;
    if (text_column(o, C_REFERER, i, t, 0, 0)) return -1;
    if (!json_text(known[J_HTTP_USER_AGENT], &t)) t = none;
    if (text_column(o, C_UA, i, t, 0, 0)) return -1;
    /* uid: $uid_got, else $uid_set, after its '=' */
    if (json_text(known[J_UID_GOT], &t) || json_text(known[J_UID_SET], &t)) {
        const char *eq = memchr(t.p, '=', t.n);
        size_t from = eq ? (size_t)(eq - t.p) + 1 : 0;
        if (col_str(&o->col[C_UID], i, t.p + from, t.n - from)) return -1;
    } else {
        col_null(&o->col[C_UID], i);
    }
    /* extra: the other keys in their order, as json_merge_patch writes them; the opt-out
     * cookie as routes.OPTED_OUT_SQL reads it there */
    int opted_out = 0;
    growbuf *x = &o->col[C_EXTRA].data;
    size_t start = x->len;
    int members = 0;
    for (int m = 0; m < np; m++) {
        const json_pair *pr = &pairs[m];
        if (pr->known >= 0 && pr->known < J_CANONICAL) continue;
        if (span_eq(pr->key, JSON_OPTOUT_KEY) && span_eq(pr->value, "1")) opted_out = 1;
        if (span_eq(pr->key, "http_cookie") && !pr->number && cookie_opted_out(pr->value.p, pr->value.n))
            opted_out = 1;
        if (gb_put(x, members ? ",\"" : "{\"", 2) || gb_put(x, pr->key.p, pr->key.n) || gb_put(x, "\":", 2))
            return -1;
        if (pr->number) {
            if (gb_put(x, pr->value.p, pr->value.n)) return -1;
        } else if (extra_string(x, pr->value.p, pr->value.n)) {
            return -1;
        }
        members++;
    }
    if (extra_close(o, i, start, members)) return -1;
    o->scratch2.len = 0;
    if (has_request && gb_put(&o->scratch2, request.p, request.n)) return -1;
    return request_columns(pl, o, i, has_request, opted_out);
}

/* ------------------------------------------------------------------ Python glue */

typedef struct {
    PyObject_HEAD
    void *ptr;
    Py_ssize_t len;
    size_t cap;
    int mapped;
} BufObject;

static void buf_dealloc(BufObject *self) {
    region_free(self->ptr, self->cap, self->mapped);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int buf_getbuffer(BufObject *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->ptr, self->len, 1, flags);
}

static PyBufferProcs buf_as_buffer = {(getbufferproc)buf_getbuffer, NULL};

static PyTypeObject BufType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracklog.ingest._fastlog.Buffer",
    .tp_basicsize = sizeof(BufObject),
    .tp_dealloc = (destructor)buf_dealloc,
    .tp_as_buffer = &buf_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory filled by the fast path, handed to Arrow without a copy.",
};

/* A Python object owning the buffer's memory (taken from `b`, also on failure). */
static PyObject *wrap(growbuf *b) {
    if (!b->p && gb_reserve(b, 1)) return PyErr_NoMemory(); /* Arrow wants an address, even for 0 bytes */
    BufObject *o = PyObject_New(BufObject, &BufType);
    if (!o) {
        gb_free(b);
        return NULL;
    }
    o->ptr = b->p, o->len = (Py_ssize_t)b->len, o->cap = b->cap, o->mapped = b->mapped;
    b->p = NULL, b->len = b->cap = 0, b->mapped = 0;
    return (PyObject *)o;
}

static void output_free(output *o) {
    for (int c = 0; c < N_COLS; c++) col_free(&o->col[c]);
    gb_free(&o->deferred);
    gb_free(&o->scratch);
    gb_free(&o->scratch2);
    gb_free(&o->arena);
    free(o->tk.t);
}

static PyObject *column_tuple(column *c) {
    PyObject *valid = wrap(&c->validity);
    PyObject *data = wrap(&c->data);
    PyObject *offsets = c->is_string ? wrap(&c->offs) : NULL;
    PyObject *out = NULL;
    c->valid = NULL, c->offsets = NULL;
    if (c->is_dict) { /* (validity, indices, dictionary offsets, dictionary data, entries, nulls) */
        PyObject *doffs = wrap(&c->dict_offs), *ddata = wrap(&c->dict_data);
        if (valid && data && doffs && ddata)
            out = Py_BuildValue("(OOOOnL)", valid, data, doffs, ddata, (Py_ssize_t)c->entries, (long long)c->nulls);
        Py_XDECREF(doffs);
        Py_XDECREF(ddata);
        Py_XDECREF(valid);
        Py_XDECREF(data);
        return out;
    }
    if (valid && data && (!c->is_string || offsets))
        out = c->is_string ? Py_BuildValue("(OOOL)", valid, offsets, data, (long long)c->nulls)
                           : Py_BuildValue("(OOL)", valid, data, (long long)c->nulls);
    Py_XDECREF(valid);
    Py_XDECREF(data);
    Py_XDECREF(offsets);
    return out;
}

static int plan_error(const char *message) {
    PyErr_SetString(PyExc_ValueError, message);
    return -1;
}

/* gaps: () or n_quoted + 1 (pre, var, post) (see `gap`); each unquoted variable after the head
 * is then one gap's, between the quoted values around it */
static int load_gaps(plan *pl, PyObject *gaps) {
    Py_ssize_t n = PyTuple_Size(gaps);
    if (n < 0) return -1;
    pl->n_gaps = (int)n;
    if (n == 0) return 0;
    if (!pl->combined || pl->json || n != pl->n_quoted + 1 || pl->elastic >= 0)
        return plan_error("gaps need the combined layouts, one more than the quoted variables, none elastic");
    int used[MAX_EXTRA] = {0};
    for (Py_ssize_t g = 0; g < n; g++) {
        gap *gp = &pl->gaps[g];
        Py_ssize_t npre, npost;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(gaps, g), "y#iy#", &gp->pre, &npre, &gp->var, &gp->post, &npost))
            return -1;
        gp->npre = (size_t)npre, gp->npost = (size_t)npost;
        if (gp->var < 0) {
            if (gp->var != -1 || npost) return plan_error("bad gap");
            continue;
        }
        /* an unquoted variable after the leading ones, between the quoted values around its gap */
        int lo = g == 0 ? pl->n_lead - 1 : pl->qidx[g - 1], hi = g < pl->n_quoted ? pl->qidx[g] : pl->n_extra;
        if (gp->var <= lo || gp->var >= hi || used[gp->var]) return plan_error("bad gap variable");
        used[gp->var] = 1;
    }
    for (int k = pl->n_lead; k < pl->n_extra; k++) {
        int quoted = 0;
        for (int j = 0; j < pl->n_quoted; j++) quoted |= pl->qidx[j] == k;
        if (!quoted && !used[k]) return plan_error("an unquoted variable outside the gaps");
    }
    pl->first_word = pl->n_extra; /* no words */
    return 0;
}

/* words: () or the template of the text after the last quote, ((pre, var, post, elastic), ...)
 * (see tail_words): with single spaces between the quoted values (no gaps), each unquoted
 * variable in one word, in the format's order, none marked elastic in `extras` */
static int load_words(plan *pl, PyObject *words) {
    Py_ssize_t n = PyTuple_Size(words);
    if (n < 0) return -1;
    pl->n_words = (int)n;
    pl->word_e = -1;
    if (n == 0) return 0;
    if (!pl->combined || pl->json || n > MAX_WORDS || pl->n_gaps || pl->elastic >= 0)
        return plan_error("words need the combined layouts, no gaps, at most 32, none elastic");
    int next = pl->first_word; /* the unquoted variables, in order */
    for (Py_ssize_t j = 0; j < n; j++) {
        gap *w = &pl->words[j];
        Py_ssize_t npre, npost;
        int kind;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(words, j), "y#iy#i", &w->pre, &npre, &w->var, &w->post, &npost,
                              &kind))
            return -1;
        w->npre = (size_t)npre, w->npost = (size_t)npost;
        pl->word_kind[j] = kind;
        if (w->var < 0) {
            if (w->var != -1 || npost || kind != WORD_PLAIN) return plan_error("bad word");
            continue;
        }
        if (w->var != next++) return plan_error("bad word variable");
        if (kind < WORD_PLAIN || kind > WORD_LIST) return plan_error("bad word kind");
        if (kind != WORD_PLAIN) pl->word_e = pl->word_e == -1 ? (int)j : -2;
    }
    if (next != pl->n_extra) return plan_error("an unquoted variable outside the words");
    /* list_match's steps: the literal text up to each variable, then the variable */
    size_t at = 0, from = 0;
    int lazy = 0;
    pl->n_prog = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        const gap *w = &pl->words[j];
        size_t need = (j > 0) + w->npre + w->npost;
        if (at + need > PROG_TEXT) return plan_error("the words' text is too long");
        if (j > 0) pl->prog_text[at++] = ' ';
        memcpy(pl->prog_text + at, w->pre, w->npre), at += w->npre;
        if (w->var >= 0) {
            pl->prog[pl->n_prog++] = (pstep){pl->prog_text + from, at - from, pl->word_kind[j], w->var};
            lazy |= pl->word_kind[j] == WORD_ANY;
            from = at;
        }
        memcpy(pl->prog_text + at, w->post, w->npost), at += w->npost;
    }
    pl->prog[pl->n_prog++] = (pstep){pl->prog_text + from, at - from, -1, -1};
    if (lazy) pl->n_prog = 0; /* .*? : the SQL's */
    pl->first_word = pl->n_extra; /* read by the words, not unquoted_values */
    return 0;
}

static int load_plan(plan *pl, PyObject *extras, PyObject *gaps, PyObject *words) {
    Py_ssize_t n = PyTuple_Size(extras);
    if (n < 0) return -1;
    if (n > MAX_EXTRA) {
        PyErr_SetString(PyExc_ValueError, "too many extra variables");
        return -1;
    }
    pl->n_extra = (int)n;
    pl->n_lead = 0;
    pl->n_quoted = 0;
    pl->elastic = -1;
    pl->has_xff = 0;
    int gapped = PyTuple_Size(gaps) > 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        const char *key;
        Py_ssize_t key_len;
        int role, decode, optout, quoted, elastic, lead;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(extras, k), "y#ipippp", &key, &key_len, &role, &decode, &optout,
                              &quoted, &elastic, &lead))
            return -1;
        /* the leading ones first (plain extras, in the common and combined layouts), then the
         * quoted ones (with gaps, the unquoted ones between them); at most one elastic among the
         * unquoted */
        if ((lead && (k != pl->n_lead || quoted || elastic || role != ROLE_EXTRA || optout != OPTOUT_NONE ||
                      pl->msec || pl->json)) ||
            (quoted && !gapped && k != pl->n_lead + pl->n_quoted) ||
            (elastic && (quoted || pl->elastic >= 0))) {
            PyErr_SetString(PyExc_ValueError, "bad variable order");
            return -1;
        }
        if (lead) pl->n_lead++;
        if (quoted) pl->qidx[pl->n_quoted++] = (int)k;
        if (elastic) pl->elastic = (int)k;
        if (role < ROLE_EXTRA || role > ROLE_XFF || optout < OPTOUT_NONE || optout > OPTOUT_HEADER ||
            (optout != OPTOUT_NONE && role != ROLE_EXTRA)) {
            PyErr_SetString(PyExc_ValueError, "bad role");
            return -1;
        }
        pl->key[k] = key, pl->key_len[k] = (size_t)key_len, pl->role[k] = role, pl->decode[k] = decode;
        pl->optout[k] = optout;
        if (role == ROLE_XFF) pl->has_xff = 1;
    }
    if (!pl->combined && !pl->json && pl->n_lead != pl->n_extra) { /* common: nothing after the head */
        PyErr_SetString(PyExc_ValueError, "the common layouts take leading variables only");
        return -1;
    }
    pl->first_word = pl->n_lead + pl->n_quoted;
    if (pl->elastic >= 0) pl->elastic -= pl->first_word; /* its index among the unquoted */
    if (load_gaps(pl, gaps)) return -1;
    if (PyTuple_Size(words) && PyTuple_Size(gaps)) return plan_error("gaps or words, not both");
    return load_words(pl, words);
}

PyDoc_STRVAR(parse_doc,
             "parse(offsets, data, offset, length, layout, extras, ipad, opad, force_wide=False, terminated=False, gaps=(), words=())\n--\n\n"
             "Parse `length` lines of a large_string array (its int64 offsets and data buffers,\n"
             "starting at element `offset`; `terminated`: each element ends with the line's '\\n',\n"
             "which is not part of the line, as line_starts() cuts them). layout: 0 common, 1 combined,\n"
             "2 the msec layout ($msec $remote_addr \"$request\" ... as combined), 3 JSON lines, 4 and 5 common and\n"
             "combined with [$time_iso8601] for [$time_local]. extras: ((b'\"name\":', role, decode, optout, quoted, elastic, lead), ...) for the\n"
             "variables other than the layout's: leading ones before $remote_addr first, then after combined's user agent the quoted ones. gaps: () (single\n"
             "spaces between the quoted ones, the unquoted ones as words after the last quote) or ((pre, var, post), ...), the text\n"
             "before each quoted one and after the last quote: pre, the extra `var` (-1: none), post. words: () or ((pre, var, post,\n"
             "elastic), ...), the words after the last quote (several variables with text around them). ipad/opad: the HMAC pads (64 bytes\n"
             "per key, keys concatenated, the first tried first), or None for no verification. Returns (columns, deferred, wide): one tuple of\n"
             "buffers per output column (user_agent and referer dictionary-encoded), the int64\n"
             "indices of the rows to compute with the SQL,\n"
             "and whether string offsets are int64.");

static PyObject *fastlog_parse(PyObject *mod, PyObject *args) {
    Py_buffer offs, data;
    Py_ssize_t offset, length;
    int layout;
    PyObject *extras, *ipad, *opad, *gaps = NULL, *words = NULL;
    int force_wide = 0; /* tests: the int64 offsets of huge chunks, on small ones */
    int terminated = 0; /* the elements end with their line's '\n' (line_starts) */
    if (!PyArg_ParseTuple(args, "y*y*nniO!OO|ppO!O!", &offs, &data, &offset, &length, &layout, &PyTuple_Type,
                          &extras, &ipad, &opad, &force_wide, &terminated, &PyTuple_Type, &gaps, &PyTuple_Type, &words))
        return NULL;
    PyObject *result = NULL;
    plan pl;
    output o;
    memset(&pl, 0, sizeof pl);
    memset(&o, 0, sizeof o);
    const int64_t *off = (const int64_t *)offs.buf;
    if (offset < 0 || length < 0 || (size_t)offs.len < (size_t)(offset + length + 1) * 8) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer too short");
        goto done;
    }
    for (Py_ssize_t i = offset; i < offset + length; i++) { /* never trust the buffers' bounds */
        if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > (int64_t)data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of bounds");
            goto done;
        }
    }
    if (layout < LAYOUT_COMMON || layout > LAYOUT_COMBINED_ISO) {
        PyErr_SetString(PyExc_ValueError, "bad layout");
        goto done;
    }
    pl.combined = layout == LAYOUT_COMBINED || layout == LAYOUT_MSEC || layout == LAYOUT_COMBINED_ISO;
    pl.msec = layout == LAYOUT_MSEC;
    pl.iso = layout == LAYOUT_COMMON_ISO || layout == LAYOUT_COMBINED_ISO;
    pl.json = layout == LAYOUT_JSON;
    if (!gaps) gaps = PyTuple_New(0); /* a new reference, released at the end */
    else Py_INCREF(gaps);
    if (!words) words = PyTuple_New(0);
    else Py_INCREF(words);
    if (!gaps || !words || load_plan(&pl, extras, gaps, words)) goto done;
    if (ipad != Py_None) {
        Py_ssize_t size = PyBytes_Check(ipad) ? PyBytes_GET_SIZE(ipad) : 0;
        if (!PyBytes_Check(ipad) || !PyBytes_Check(opad) || size == 0 || size % 64 != 0 ||
            size / 64 > MAX_KEYS || PyBytes_GET_SIZE(opad) != size) {
            PyErr_SetString(PyExc_ValueError, "ipad and opad must be 64 bytes per key, 1 to 16 keys");
            goto done;
        }
        pl.verify = 1;
        pl.n_keys = (int)(size / 64);
        for (int k = 0; k < pl.n_keys; k++)
            hmac_key_init(&pl.hmac[k], (const uint8_t *)PyBytes_AS_STRING(ipad) + 64 * k,
                          (const uint8_t *)PyBytes_AS_STRING(opad) + 64 * k);
    }
    size_t n = (size_t)length;
    size_t text = length ? (size_t)(off[offset + length] - off[offset]) : 0;
    size_t keys = 0;
    for (int k = 0; k < pl.n_extra; k++) keys += pl.key_len[k] + 8;
    /* a value never outgrows its raw text by more than to_json's \u00XX (x6) */
    int wide = force_wide || (double)text * 8 + (double)n * (256 + (double)keys) > (double)INT32_MAX;
    int failed = 0;
    for (int c = 0; c < N_COLS && !failed; c++) {
        int fixed = c == C_TS || c == C_STATUS || c == C_BYTES;
        size_t hint = c == C_LINE || c == C_EXTRA ? 4096 : text / 8;
        if (c == C_UA || c == C_REFERER)
            failed = dict_init(&o.col[c], n, wide);
        else
            failed = col_init(&o.col[c], !fixed, c == C_STATUS ? 2 : 8, wide, n, hint);
    }
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const char *base = (const char *)data.buf;
    for (size_t i = 0; i < n && !failed; i++) {
        int64_t a = off[offset + (Py_ssize_t)i], b = off[offset + (Py_ssize_t)i + 1];
        if (terminated && b > a && base[b - 1] == '\n') b--;
        failed = (pl.json ? parse_json_line : parse_line)(&pl, &o, i, base + a, (size_t)(b - a)) != 0;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *cols = PyTuple_New(N_COLS);
    if (!cols) goto done;
    for (int c = 0; c < N_COLS; c++) {
        PyObject *t = column_tuple(&o.col[c]);
        if (!t) {
            Py_DECREF(cols);
            goto done;
        }
        PyTuple_SET_ITEM(cols, c, t);
    }
    PyObject *deferred = wrap(&o.deferred);
    if (!deferred) {
        Py_DECREF(cols);
        goto done;
    }
    result = Py_BuildValue("(NNO)", cols, deferred, wide ? Py_True : Py_False);
done:
    Py_XDECREF(gaps);
    Py_XDECREF(words);
    output_free(&o);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *fastlog_hmac_sig(PyObject *mod, PyObject *args) {
    const char *ipad, *opad, *path;
    Py_ssize_t ni, no, np;
    if (!PyArg_ParseTuple(args, "y#y#y#", &ipad, &ni, &opad, &no, &path, &np)) return NULL;
    if (ni != 64 || no != 64) {
        PyErr_SetString(PyExc_ValueError, "ipad and opad must be 64 bytes");
        return NULL;
    }
    hmac_key k;
    char out[22];
    hmac_key_init(&k, (const uint8_t *)ipad, (const uint8_t *)opad);
    expected_sig(&k, path, (size_t)np, out);
    return PyUnicode_FromStringAndSize(out, 22);
}

PyDoc_STRVAR(line_starts_doc,
             "line_starts(data)\n--\n\n"
             "The int64 offsets (native byte order, as bytes) that cut `data` into its '\\n'-terminated\n"
             "lines, each with its '\\n': 0, then one past each '\\n' (n + 1 offsets for n lines; bytes\n"
             "after the last '\\n' are no line). With `data` as the data buffer, the offsets of a\n"
             "large_string array of the lines, made without copying them (parse(..., terminated=True)).");

static PyObject *fastlog_line_starts(PyObject *mod, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    const char *p = (const char *)data.buf, *end = p + data.len, *q;
    size_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    for (q = p; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++) n++;
    Py_END_ALLOW_THREADS
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((n + 1) * sizeof(int64_t)));
    if (out) {
        int64_t *o = (int64_t *)PyBytes_AS_STRING(out);
        size_t i = 0;
        o[i++] = 0;
        Py_BEGIN_ALLOW_THREADS
        for (q = p; i <= n && q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
            o[i++] = (int64_t)(q - p) + 1;
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&data);
    return out;
}

/* ------------------------------------------------------------------ recipient lookup */

/* KeyIndex: the manifests' recipients, (delivery number, recipient id) -> entry, in an
 * open-addressing hash table. lookup() gives each hit of a chunk its recipient's entry, or -1:
 * what the SQL join `r.delivery_id = h.delivery_id AND r.recipient_id = h.recipient_id` finds
 * (ids compared byte for byte; a hit of no known delivery, or without recipient id, has delivery
 * number -1 and matches nothing). The hits' ids are attacker-controlled: every read is bounded by
 * the buffers' checked lengths.
 *
 * Each key is copied into a record of its own (entry, delivery, length, bytes; 8-byte aligned),
 * and each slot holds the key's hash tag and its record's place: a probe reads one slot and one
 * record, and lookup() prefetches both for a window of hits ahead (the table outgrows the CPU's
 * caches with large manifests: four dependent reads cost 200-400 ns per hit, the prefetched two
 * a few dozen). */
typedef struct {
    int32_t entry, delivery;
    uint32_t len, pad;
} key_record; /* followed by the id's bytes, padded to 8 */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    uint64_t *slots; /* hash tag << 32 | (record's place / 8 + 1); 0 = free */
    size_t mask;
    int broken;    /* a failed add() left it half done: not to be used */
    growbuf arena; /* the records */
} KeyIndexObject;

#define KEY_WINDOW 16 /* hits whose slots and records lookup() prefetches at once */

static inline uint64_t key_hash(int32_t delivery, const char *s, size_t n) {
    /* the same ids recur in every delivery: the delivery is mixed in fully (murmur3's fmix64) */
    uint64_t h = hash_bytes(s, n) + (uint64_t)(uint32_t)delivery * 0x9E3779B97F4A7C15u;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDu;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53u;
    return h ^ (h >> 33);
}

static inline const key_record *key_rec(const KeyIndexObject *ix, uint64_t slot) {
    return (const key_record *)(ix->arena.p + ((slot & 0xFFFFFFFFu) - 1) * 8);
}

/* the slot holding (delivery, s[0:n]) of hash h, or the free slot where it would go */
static inline size_t key_slot(const KeyIndexObject *ix, uint64_t h, int32_t delivery, const char *s, size_t n) {
    uint64_t tag = h >> 32 << 32;
    size_t pos = (size_t)h & ix->mask;
    for (;;) {
        uint64_t slot = ix->slots[pos];
        if (!slot) return pos;
        if ((slot & ~(uint64_t)0xFFFFFFFFu) == tag) {
            const key_record *r = key_rec(ix, slot);
            if (r->delivery == delivery && r->len == n && (n == 0 || memcmp(r + 1, s, n) == 0)) return pos;
        }
        pos = (pos + 1) & ix->mask;
    }
}

/* offsets[first..first+n] ascending and within `len` bytes of data */
static int offsets_ok(const int64_t *off, Py_ssize_t first, Py_ssize_t n, Py_ssize_t len) {
    for (Py_ssize_t i = first; i < first + n; i++)
        if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > (int64_t)len) return 0;
    return n == 0 || (off[first] >= 0 && off[first] <= (int64_t)len);
}

static void keyindex_dealloc(KeyIndexObject *self) {
    free(self->slots);
    gb_free(&self->arena);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(lookup_doc,
             "lookup(delivery, offsets, data, offset, length)\n--\n\n"
             "The entry of each of `length` hits (from element `offset` of a large_string array of\n"
             "recipient ids: its int64 offsets and data buffers; `delivery`: each hit's delivery\n"
             "number, int32, -1 for none) among the index's entries, or -1: int32s, as bytes.");

static PyObject *keyindex_lookup(KeyIndexObject *self, PyObject *args) {
    Py_buffer dno, offs, data;
    Py_ssize_t offset, length;
    if (!PyArg_ParseTuple(args, "y*y*y*nn", &dno, &offs, &data, &offset, &length)) return NULL;
    PyObject *out = NULL;
    const int64_t *off = (const int64_t *)offs.buf;
    if (offset < 0 || length < 0 || (size_t)offs.len < (size_t)(offset + length + 1) * 8 ||
        (size_t)dno.len < (size_t)length * 4) {
        PyErr_SetString(PyExc_ValueError, "buffers too short");
        goto done;
    }
    if (!offsets_ok(off, offset, length, data.len)) {
        PyErr_SetString(PyExc_ValueError, "offsets out of bounds");
        goto done;
    }
    if (self->broken) {
        PyErr_SetString(PyExc_ValueError, "the index is broken");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, length * 4);
    if (!out) goto done;
    int32_t *rows = (int32_t *)PyBytes_AS_STRING(out);
    const int32_t *delivery = (const int32_t *)dno.buf;
    const char *base = (const char *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    uint64_t hash[KEY_WINDOW];
    for (Py_ssize_t at = 0; at < length; at += KEY_WINDOW) {
        Py_ssize_t m = length - at < KEY_WINDOW ? length - at : KEY_WINDOW;
        for (Py_ssize_t j = 0; j < m; j++) { /* the hashes; their slots fetched */
            Py_ssize_t i = at + j;
            if (delivery[i] < 0 || self->n == 0) continue;
            hash[j] = key_hash(delivery[i], base + off[offset + i], (size_t)(off[offset + i + 1] - off[offset + i]));
            __builtin_prefetch(&self->slots[(size_t)hash[j] & self->mask]);
        }
        for (Py_ssize_t j = 0; j < m; j++) { /* the first slot's record fetched */
            if (delivery[at + j] < 0 || self->n == 0) continue;
            uint64_t slot = self->slots[(size_t)hash[j] & self->mask];
            if (slot) __builtin_prefetch(key_rec(self, slot));
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            Py_ssize_t i = at + j;
            int32_t d = delivery[i];
            if (d < 0 || self->n == 0) {
                rows[i] = -1;
                continue;
            }
            int64_t a = off[offset + i], b = off[offset + i + 1];
            uint64_t slot = self->slots[key_slot(self, hash[j], d, base + a, (size_t)(b - a))];
            rows[i] = slot ? key_rec(self, slot)->entry : -1;
        }
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&dno);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *keyindex_add(KeyIndexObject *ix, PyObject *args);
PyDoc_STRVAR(add_doc,
             "add(delivery, offsets, data, n)\n--\n\n"
             "Add `n` entries, numbered from the index's size on: each one's delivery number (int32,\n"
             ">= 0) and recipient id (element i of a large_string array: int64 offsets and data),\n"
             "copied. ValueError when a key is there already (the SQL join would give both); the\n"
             "index is then unusable (`broken`).");

static PyMethodDef keyindex_methods[] = {
    {"lookup", (PyCFunction)keyindex_lookup, METH_VARARGS, lookup_doc},
    {"add", (PyCFunction)keyindex_add, METH_VARARGS, add_doc},
    {NULL, NULL, 0, NULL}};

static PyTypeObject KeyIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracklog.ingest._fastlog.KeyIndex",
    .tp_basicsize = sizeof(KeyIndexObject),
    .tp_dealloc = (destructor)keyindex_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = keyindex_methods,
    .tp_doc = "The manifests' recipients by (delivery number, recipient id): see add() and lookup().",
};

/* room for `n` more keys: the slots doubled (and every record's slot placed again) until at
 * most half of them are used */
static int keyindex_reserve(KeyIndexObject *ix, size_t n) {
    size_t nslots = ix->mask + 1;
    if (ix->slots && ((size_t)ix->n + n) * 2 <= nslots) return 0;
    while (nslots < ((size_t)ix->n + n) * 2) nslots *= 2;
    uint64_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return -1;
    for (size_t at = 0; at < ix->arena.len;) {
        const key_record *r = (const key_record *)(ix->arena.p + at);
        uint64_t h = key_hash(r->delivery, (const char *)(r + 1), r->len);
        size_t pos = (size_t)h & (nslots - 1);
        while (slots[pos]) pos = (pos + 1) & (nslots - 1);
        slots[pos] = (h >> 32 << 32) | (uint64_t)(at / 8 + 1);
        at += (sizeof *r + r->len + 7) & ~(size_t)7;
    }
    free(ix->slots);
    ix->slots = slots, ix->mask = nslots - 1;
    return 0;
}

static PyObject *keyindex_add(KeyIndexObject *ix, PyObject *args) {
    Py_buffer dbuf, obuf, data;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &dbuf, &obuf, &data, &n)) return NULL;
    PyObject *result = NULL;
    const int64_t *off = (const int64_t *)obuf.buf;
    const int32_t *dno = (const int32_t *)dbuf.buf;
    const char *base = (const char *)data.buf;
    if (ix->broken) {
        PyErr_SetString(PyExc_ValueError, "the index is broken");
        goto done;
    }
    if (n < 0 || n >= INT32_MAX / 2 - ix->n || (size_t)obuf.len < (size_t)(n + 1) * 8 ||
        (size_t)dbuf.len < (size_t)n * 4 || !offsets_ok(off, 0, n, data.len)) {
        PyErr_SetString(PyExc_ValueError, "bad index buffers");
        goto done;
    }
    size_t bytes = n ? (size_t)(off[n] - off[0]) : 0;
    if (keyindex_reserve(ix, (size_t)n) || gb_reserve(&ix->arena, (size_t)n * (sizeof(key_record) + 8) + bytes + 8) ||
        ix->arena.cap / 8 >= UINT32_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    int duplicate = 0, negative = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t e = 0; e < n; e++) {
        size_t len = (size_t)(off[e + 1] - off[e]);
        const char *s = base + off[e];
        if (dno[e] < 0) {
            negative = 1;
            break;
        }
        uint64_t h = key_hash(dno[e], s, len);
        size_t pos = key_slot(ix, h, dno[e], s, len);
        if (ix->slots[pos]) {
            duplicate = 1;
            break;
        }
        /* the record, in the room reserved above (no reallocation while adding) */
        key_record r = {(int32_t)ix->n, dno[e], (uint32_t)len, 0};
        size_t at = ix->arena.len;
        memcpy(ix->arena.p + at, &r, sizeof r);
        if (len) memcpy(ix->arena.p + at + sizeof r, s, len);
        ix->arena.len = at + ((sizeof r + len + 7) & ~(size_t)7);
        ix->slots[pos] = (h >> 32 << 32) | (uint64_t)(at / 8 + 1);
        ix->n++;
    }
    Py_END_ALLOW_THREADS
    if (duplicate || negative) {
        ix->broken = 1;
        PyErr_SetString(PyExc_ValueError, duplicate ? "duplicate key" : "negative delivery number");
        goto done;
    }
    result = PyLong_FromSsize_t(ix->n);
done:
    PyBuffer_Release(&dbuf);
    PyBuffer_Release(&obuf);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *fastlog_key_index(PyObject *mod, PyObject *noargs) {
    KeyIndexObject *ix = PyObject_New(KeyIndexObject, &KeyIndexType);
    if (!ix) return NULL;
    ix->n = 0, ix->slots = NULL, ix->mask = 15, ix->broken = 0;
    memset(&ix->arena, 0, sizeof ix->arena);
    return (PyObject *)ix;
}

static PyMethodDef fastlog_methods[] = {
    {"parse", fastlog_parse, METH_VARARGS, parse_doc},
    {"line_starts", fastlog_line_starts, METH_VARARGS, line_starts_doc},
    {"key_index", fastlog_key_index, METH_NOARGS,
     "key_index()\n--\n\nAn empty KeyIndex: the manifests' recipients by (delivery number, recipient id)."},
    {"hmac_sig", fastlog_hmac_sig, METH_VARARGS, "hmac_sig(ipad, opad, path)\n--\n\nSIG of `path` (for tests)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef fastlog_module = {PyModuleDef_HEAD_INIT, "_fastlog",
                                            "The compiled fast path of ingest (see fastpath.py).", -1,
                                            fastlog_methods};

PyMODINIT_FUNC PyInit__fastlog(void) {
    if (PyType_Ready(&BufType) < 0 || PyType_Ready(&KeyIndexType) < 0) return NULL;
    PyObject *m = PyModule_Create(&fastlog_module);
    if (!m) return NULL;
    PyObject *names = PyTuple_New(N_COLS);
    if (!names) goto fail;
    for (int c = 0; c < N_COLS; c++) {
        PyObject *s = PyUnicode_FromString(COL_NAMES[c]);
        if (!s) {
            Py_DECREF(names);
            goto fail;
        }
        PyTuple_SET_ITEM(names, c, s);
    }
    if (PyModule_AddObject(m, "COLUMNS", names) < 0) {
        Py_DECREF(names);
        goto fail;
    }
    if (PyModule_AddStringConstant(m, "SHA256", SHA_IMPL) < 0) goto fail;
    PyObject *keys = PyTuple_New(J_KNOWN);
    if (!keys) goto fail;
    for (int k = 0; k < J_KNOWN; k++) {
        JSON_KEY_LEN[k] = strlen(JSON_KEYS[k]);
        PyTuple_SET_ITEM(keys, k, PyUnicode_FromString(JSON_KEYS[k]));
    }
    if (PyModule_AddObject(m, "JSON_KEYS", keys) < 0) {
        Py_DECREF(keys);
        goto fail;
    }
    if (PyModule_AddStringConstant(m, "JSON_OPTOUT_KEY", JSON_OPTOUT_KEY) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "ABI", 14) < 0) goto fail; /* fastpath.py checks it: a stale build is not used */
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
