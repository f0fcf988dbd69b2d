/*
 * The LogLine QuickJS guest: a reactor module that runs JavaScript spans
 * (runtime `quickjs`) under the LogLine ABI (abi/ABI.md).
 *
 * Three exports, called by the sandbox:
 *   _initialize      (wasi-libc's reactor entry; runs the constructor below)
 *                    makes the JS runtime and context and evaluates the
 *                    prelude (prelude.js), which defines the JS surfaces;
 *   logline_prepare  reads {"kind","source","name"} as its input and compiles
 *                    the source once, so that it is part of the snapshot the
 *                    sandbox takes next; a syntax error sets the output to a
 *                    message with line and column and returns non-zero;
 *   run              calls the compiled code with the run's input, settles
 *                    its promise, writes the JSON output; 0 = ok.
 *
 * The C half only moves bytes: host calls, UTF-8, compilation. Everything a
 * JS author sees is built by the prelude from the natives bound here.
 * Memory: an allocation that fails marks the run, which then fails whatever
 * JS did with the error, so the sandbox can report memory_limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <stdio.h>
#include <time.h>

#include "quickjs.h"

#define IMPORT(name) __attribute__((import_module("logline"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name), visibility("default")))

IMPORT("log") int32_t ll_log(int32_t level, const void *p, int32_t n);
IMPORT("now") int64_t ll_now(void);
IMPORT("random") int32_t ll_random(void *p, int32_t n);
IMPORT("input") int32_t ll_input(void *p, int32_t cap);
IMPORT("output") int32_t ll_output(const void *p, int32_t n);
IMPORT("env") int64_t ll_env(const void *k, int32_t kn);
IMPORT("sql") int64_t ll_sql(const void *p, int32_t n);
IMPORT("insert_span") int64_t ll_insert_span(const void *p, int32_t n);
IMPORT("lock") int32_t ll_lock(const void *k, int32_t kn, int32_t ttl_ms);
IMPORT("unlock") int32_t ll_unlock(const void *k, int32_t kn);
IMPORT("exec") int64_t ll_exec(const void *p, int32_t n);
IMPORT("http") int64_t ll_http(const void *p, int32_t n);
IMPORT("blake3") int32_t ll_blake3(const void *p, int32_t n, void *out);
IMPORT("ed25519_verify") int32_t ll_ed25519_verify(const void *pub, const void *msg, int32_t mlen, const void *sig);
IMPORT("result") int32_t ll_result(void *p, int32_t cap);

enum { LOG_ERROR = 3 };

static const char prelude[] =
#include "prelude.inc"
    ;

static JSRuntime *rt;
static JSContext *ctx;
static JSValue api;       /* the prelude's {prepare, run, pump, finish, describe} */
static int oom;           /* an allocation failed during this call */
static JSModuleDef *entry_module; /* the module logline_prepare is compiling */

/* Random state of Math.random: zero in the snapshot, so every run seeds it
   from its own seeded stream on first use. */
static uint64_t rng_s[2];

/* ---- memory: wasi-libc's malloc, with failures remembered ---- */

#define MALLOC_OVERHEAD 8

static void *ll_js_malloc(JSMallocState *s, size_t size)
{
    void *p;
    if (s->malloc_size + size > s->malloc_limit || !(p = malloc(size))) {
        oom = 1;
        return NULL;
    }
    s->malloc_count++;
    s->malloc_size += malloc_usable_size(p) + MALLOC_OVERHEAD;
    return p;
}

static void ll_js_free(JSMallocState *s, void *p)
{
    if (!p)
        return;
    s->malloc_count--;
    s->malloc_size -= malloc_usable_size(p) + MALLOC_OVERHEAD;
    free(p);
}

static void *ll_js_realloc(JSMallocState *s, void *p, size_t size)
{
    size_t old;
    void *q;
    if (!p)
        return size ? ll_js_malloc(s, size) : NULL;
    old = malloc_usable_size(p);
    if (size == 0) {
        ll_js_free(s, p);
        return NULL;
    }
    if (s->malloc_size + size - old > s->malloc_limit || !(q = realloc(p, size))) {
        oom = 1;
        return NULL;
    }
    s->malloc_size += malloc_usable_size(q) - old;
    return q;
}

static size_t ll_js_usable(const void *p) { return malloc_usable_size((void *)p); }

static const JSMallocFunctions malloc_funcs = {
    ll_js_malloc, ll_js_free, ll_js_realloc, ll_js_usable,
};

/* ---- helpers ---- */

static void log_text(int level, const char *s, size_t n) { ll_log(level, s, (int32_t)n); }

/* pending returns the run's pending result as a JS string. */
static JSValue pending(JSContext *c, int32_t n)
{
    JSValue v;
    char *buf;
    if (n <= 0)
        return JS_NewStringLen(c, "", 0);
    buf = malloc((size_t)n);
    if (!buf) {
        oom = 1;
        return JS_ThrowOutOfMemory(c);
    }
    ll_result(buf, n);
    v = JS_NewStringLen(c, buf, (size_t)n);
    free(buf);
    return v;
}

static JSValue pending_json(JSContext *c, int32_t n);

/* bytes gives the bytes of an ArrayBuffer or of a string (UTF-8); *str is
   set when they belong to a C string to free. The prelude turns typed
   arrays into their buffers first: asking QuickJS what an object is costs
   a thrown (and discarded) TypeError. */
static int bytes(JSContext *c, JSValueConst v, const uint8_t **p, size_t *n, const char **str)
{
    uint8_t *buf;
    *str = NULL;
    if (JS_IsString(v)) {
        *str = JS_ToCStringLen(c, n, v);
        if (!*str)
            return -1;
        *p = (const uint8_t *)*str;
        return 0;
    }
    buf = JS_GetArrayBuffer(c, n, v);
    if (!buf)
        return -1;
    *p = buf;
    return 0;
}

static void free_bytes(JSContext *c, const char *str)
{
    if (str)
        JS_FreeCString(c, str);
}

static JSValue new_buffer(JSContext *c, const void *p, size_t n)
{
    return JS_NewArrayBufferCopy(c, p, n);
}

/* ---- natives (bound to the prelude, never to the global object) ---- */

static JSValue n_log(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    int32_t level = 1;
    size_t n;
    const char *s;
    JS_ToInt32(c, &level, argv[0]);
    s = JS_ToCStringLen(c, &n, argv[1]);
    if (!s)
        return JS_EXCEPTION;
    ll_log(level, s, (int32_t)n);
    JS_FreeCString(c, s);
    return JS_UNDEFINED;
}

/* The error of the last host call that returned a negative code: its code
   and the pending result (abi.Error JSON), for lastError(). */
static int32_t last_errno;

/* call(id, payload): the i64 host calls. The answer is parsed JSON (env:
   the raw value, a string), or undefined when the host returned a negative
   code: lastError() then says which. */
static JSValue n_call(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    int32_t id;
    size_t n;
    int64_t r;
    const char *s;
    if (JS_ToInt32(c, &id, argv[0]))
        return JS_EXCEPTION;
    s = JS_ToCStringLen(c, &n, argv[1]);
    if (!s)
        return JS_EXCEPTION;
    switch (id) {
    case 0: r = ll_env(s, (int32_t)n); break;
    case 1: r = ll_sql(s, (int32_t)n); break;
    case 2: r = ll_insert_span(s, (int32_t)n); break;
    case 3: r = ll_exec(s, (int32_t)n); break;
    case 4: r = ll_http(s, (int32_t)n); break;
    default:
        JS_FreeCString(c, s);
        return JS_ThrowRangeError(c, "unknown host call %d", id);
    }
    JS_FreeCString(c, s);
    if (r < 0) {
        last_errno = (int32_t)r;
        return JS_UNDEFINED;
    }
    return id == 0 ? pending(c, (int32_t)r) : pending_json(c, (int32_t)r);
}

/* lastError: [errno, the pending result's text] of the last failed call. */
static JSValue n_last_error(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    JSValue arr = JS_NewArray(c);
    JS_SetPropertyUint32(c, arr, 0, JS_NewInt32(c, last_errno));
    JS_SetPropertyUint32(c, arr, 1, pending(c, ll_result(NULL, 0)));
    return arr;
}

/* lock(key, ttl) and unlock(key) return the host's code; pending() then
   reads the error of a negative one. */
static JSValue n_lock(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    size_t n;
    int32_t ttl = 0, r;
    const char *k = JS_ToCStringLen(c, &n, argv[0]);
    if (!k)
        return JS_EXCEPTION;
    if (argc > 1 && JS_ToInt32Clamp(c, &ttl, argv[1], 0, INT32_MAX, 0)) {
        JS_FreeCString(c, k);
        return JS_EXCEPTION;
    }
    r = argc > 1 ? ll_lock(k, (int32_t)n, ttl) : ll_unlock(k, (int32_t)n);
    JS_FreeCString(c, k);
    return JS_NewInt32(c, r);
}

static JSValue n_pending(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    return pending(c, ll_result(NULL, 0));
}

/* nowISO: the run's clock as the ledger writes `at`, UTC with six
   fractional digits: 2026-01-02T03:04:05.123456Z. */
static JSValue n_now_iso(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    int64_t ns = ll_now();
    int64_t us = ns / 1000 - (ns % 1000 < 0);
    int64_t secs = us / 1000000 - (us % 1000000 < 0);
    int32_t frac = (int32_t)(us - secs * 1000000);
    time_t t = (time_t)secs;
    struct tm tm;
    char buf[40];
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return JS_ThrowRangeError(c, "the run's clock is out of range");
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    return JS_NewString(c, buf);
}

/* hex: lowercase hex of bytes (in C: a JS loop of string concatenations
   costs a thousand times more fuel). */
static JSValue n_hex(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p;
    size_t n, i;
    const char *str;
    char *out;
    JSValue v;
    if (bytes(c, argv[0], &p, &n, &str))
        return JS_EXCEPTION;
    out = malloc(2 * n + 1);
    if (!out) {
        free_bytes(c, str);
        oom = 1;
        return JS_ThrowOutOfMemory(c);
    }
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    v = JS_NewStringLen(c, out, 2 * n);
    free(out);
    free_bytes(c, str);
    return v;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* fromHex: the bytes of a hex string, as an ArrayBuffer. */
static JSValue n_from_hex(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    size_t n, i;
    uint8_t *out;
    JSValue v;
    const char *s = JS_ToCStringLen(c, &n, argv[0]);
    if (!s)
        return JS_EXCEPTION;
    if (n % 2) {
        JS_FreeCString(c, s);
        return JS_ThrowTypeError(c, "toU8: a hex string has an even length");
    }
    out = malloc(n / 2 + 1);
    if (!out) {
        JS_FreeCString(c, s);
        oom = 1;
        return JS_ThrowOutOfMemory(c);
    }
    for (i = 0; i < n / 2; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out);
            JS_FreeCString(c, s);
            return JS_ThrowTypeError(c, "toU8: not a hex string");
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    v = new_buffer(c, out, n / 2);
    free(out);
    JS_FreeCString(c, s);
    return v;
}

/* ---- JSON in: parsed in C, straight from the host's bytes ----

   QuickJS's JSON.parse goes through a JS string (the input converted once
   to make it, once back to parse it), builds every string and key in a
   growing buffer and parses numbers with its general js_atof: about 250
   units of fuel per byte of a span. This parser makes keys into atoms and
   strings into JS strings directly from the input, and reads integers
   itself: RFC 8259, as strict as JSON.parse, with the same results (the
   last of duplicate keys wins, "__proto__" is an own property, -0 stays
   -0, strtod rounds the rest correctly). */

#define JSON_MAX_DEPTH 1000

typedef struct {
    JSContext *c;
    const uint8_t *p, *start, *end;
    int depth;
    char *tmp; /* decoded strings with escapes; as long as the input */
} JSONIn;

static JSValue json_error(JSONIn *j, const char *what)
{
    if (j->p >= j->end)
        return JS_ThrowSyntaxError(j->c, "JSON: %s at the end of the input", what);
    return JS_ThrowSyntaxError(j->c, "JSON: %s at byte %d", what, (int)(j->p - j->start));
}

static void json_ws(JSONIn *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static int json_hex4(const uint8_t *p)
{
    int i, v = 0, d;
    for (i = 0; i < 4; i++) {
        d = hexval(p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* json_string reads a string after its opening quote into *s, *n: the
   input itself when it has no escapes, else j->tmp, decoded (a lone
   surrogate as its three-byte form, which JS_NewStringLen keeps). */
static int json_string(JSONIn *j, const char **s, size_t *n)
{
    const uint8_t *q = j->p;
    char *o;
    while (q < j->end && *q != '"' && *q != '\\' && *q >= 0x20)
        q++;
    if (q < j->end && *q == '"') {
        *s = (const char *)j->p;
        *n = q - j->p;
        j->p = q + 1;
        return 0;
    }
    if (!j->tmp) {
        j->tmp = malloc(j->end - j->start + 1);
        if (!j->tmp) {
            oom = 1;
            JS_ThrowOutOfMemory(j->c);
            return -1;
        }
    }
    o = j->tmp;
    memcpy(o, j->p, q - j->p);
    o += q - j->p;
    j->p = q;
    for (;;) {
        uint32_t ch;
        if (j->p >= j->end) {
            json_error(j, "unterminated string");
            return -1;
        }
        ch = *j->p;
        if (ch == '"') {
            j->p++;
            break;
        }
        if (ch < 0x20) {
            json_error(j, "control character in a string");
            return -1;
        }
        if (ch != '\\') {
            *o++ = (char)ch;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2) {
            j->p = j->end;
            json_error(j, "unterminated string");
            return -1;
        }
        switch (j->p[1]) {
        case '"': case '\\': case '/': *o++ = (char)j->p[1]; j->p += 2; continue;
        case 'b': *o++ = '\b'; j->p += 2; continue;
        case 'f': *o++ = '\f'; j->p += 2; continue;
        case 'n': *o++ = '\n'; j->p += 2; continue;
        case 'r': *o++ = '\r'; j->p += 2; continue;
        case 't': *o++ = '\t'; j->p += 2; continue;
        case 'u': break;
        default:
            json_error(j, "bad escape in a string");
            return -1;
        }
        if (j->end - j->p < 6 || (int)(ch = json_hex4(j->p + 2)) < 0) {
            json_error(j, "bad \\u escape in a string");
            return -1;
        }
        j->p += 6;
        if (ch >= 0xd800 && ch < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') {
            int lo = json_hex4(j->p + 2);
            if (lo >= 0xdc00 && lo < 0xe000) {
                ch = 0x10000 + ((ch - 0xd800) << 10) + (lo - 0xdc00);
                j->p += 6;
            }
        }
        if (ch < 0x80) {
            *o++ = (char)ch;
        } else if (ch < 0x800) {
            *o++ = (char)(0xc0 | ch >> 6);
            *o++ = (char)(0x80 | (ch & 0x3f));
        } else if (ch < 0x10000) {
            *o++ = (char)(0xe0 | ch >> 12);
            *o++ = (char)(0x80 | (ch >> 6 & 0x3f));
            *o++ = (char)(0x80 | (ch & 0x3f));
        } else {
            *o++ = (char)(0xf0 | ch >> 18);
            *o++ = (char)(0x80 | (ch >> 12 & 0x3f));
            *o++ = (char)(0x80 | (ch >> 6 & 0x3f));
            *o++ = (char)(0x80 | (ch & 0x3f));
        }
    }
    *s = j->tmp;
    *n = o - j->tmp;
    return 0;
}

static JSValue json_number(JSONIn *j)
{
    const uint8_t *s = j->p;
    int neg = 0, digits = 0, integer = 1;
    int64_t v = 0;
    char buf[64], *big = NULL;
    double d;
    if (*j->p == '-') {
        neg = 1;
        j->p++;
    }
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return json_error(j, "bad number");
    if (*j->p == '0') {
        j->p++;
        digits = 1;
    } else {
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
            if (digits < 18)
                v = v * 10 + (*j->p - '0');
            digits++;
            j->p++;
        }
    }
    if (j->p < j->end && *j->p == '.') {
        integer = 0;
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return json_error(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        integer = 0;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return json_error(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (integer && digits <= 15) { /* exact in a double */
        if (neg && v == 0)
            return JS_NewFloat64(j->c, -0.0);
        v = neg ? -v : v;
        if (v >= INT32_MIN && v <= INT32_MAX)
            return JS_NewInt32(j->c, (int32_t)v);
        return JS_NewFloat64(j->c, (double)v);
    }
    if ((size_t)(j->p - s) < sizeof buf) {
        memcpy(buf, s, j->p - s);
        buf[j->p - s] = 0;
        d = strtod(buf, NULL);
    } else {
        big = malloc(j->p - s + 1);
        if (!big) {
            oom = 1;
            return JS_ThrowOutOfMemory(j->c);
        }
        memcpy(big, s, j->p - s);
        big[j->p - s] = 0;
        d = strtod(big, NULL);
        free(big);
    }
    return JS_NewFloat64(j->c, d);
}

static JSValue json_value(JSONIn *j);

static JSValue json_object(JSONIn *j)
{
    JSValue obj = JS_NewObject(j->c), val;
    const char *k;
    size_t n;
    JSAtom atom;
    if (JS_IsException(obj))
        return obj;
    j->p++; /* { */
    json_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return obj;
    }
    for (;;) {
        if (j->p >= j->end || *j->p != '"') {
            json_error(j, "expected a key");
            goto fail;
        }
        j->p++;
        if (json_string(j, &k, &n))
            goto fail;
        atom = JS_NewAtomLen(j->c, k, n);
        if (atom == JS_ATOM_NULL)
            goto fail;
        json_ws(j);
        if (j->p >= j->end || *j->p != ':') {
            JS_FreeAtom(j->c, atom);
            json_error(j, "expected ':'");
            goto fail;
        }
        j->p++;
        val = json_value(j);
        if (JS_IsException(val) ||
            JS_DefinePropertyValue(j->c, obj, atom, val, JS_PROP_C_W_E) < 0) {
            JS_FreeAtom(j->c, atom);
            goto fail;
        }
        JS_FreeAtom(j->c, atom);
        json_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            json_ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            return obj;
        }
        json_error(j, "expected ',' or '}'");
        goto fail;
    }
fail:
    JS_FreeValue(j->c, obj);
    return JS_EXCEPTION;
}

static JSValue json_array(JSONIn *j)
{
    JSValue arr = JS_NewArray(j->c), val;
    uint32_t i = 0;
    if (JS_IsException(arr))
        return arr;
    j->p++; /* [ */
    json_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return arr;
    }
    for (;;) {
        val = json_value(j);
        if (JS_IsException(val) ||
            JS_DefinePropertyValue(j->c, arr, JS_NewAtomUInt32(j->c, i++), val, JS_PROP_C_W_E) < 0)
            goto fail;
        json_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return arr;
        }
        json_error(j, "expected ',' or ']'");
        goto fail;
    }
fail:
    JS_FreeValue(j->c, arr);
    return JS_EXCEPTION;
}

static int json_word(JSONIn *j, const char *w, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static JSValue json_value(JSONIn *j)
{
    JSValue v;
    const char *s;
    size_t n;
    json_ws(j);
    if (j->p >= j->end)
        return json_error(j, "expected a value");
    switch (*j->p) {
    case '{':
    case '[':
        if (++j->depth > JSON_MAX_DEPTH)
            return json_error(j, "nested too deeply");
        v = *j->p == '{' ? json_object(j) : json_array(j);
        j->depth--;
        return v;
    case '"':
        j->p++;
        if (json_string(j, &s, &n))
            return JS_EXCEPTION;
        return JS_NewStringLen(j->c, s, n);
    case 't':
        if (json_word(j, "true", 4))
            return JS_TRUE;
        break;
    case 'f':
        if (json_word(j, "false", 5))
            return JS_FALSE;
        break;
    case 'n':
        if (json_word(j, "null", 4))
            return JS_NULL;
        break;
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
            return json_number(j);
    }
    return json_error(j, "unexpected character");
}

/* parse_json parses one JSON text; empty input is null. */
static JSValue parse_json(JSContext *c, const uint8_t *p, size_t n)
{
    JSONIn j = {c, p, p, p + n, 0, NULL};
    JSValue v;
    json_ws(&j);
    if (j.p == j.end)
        return JS_NULL;
    v = json_value(&j);
    if (!JS_IsException(v)) {
        json_ws(&j);
        if (j.p != j.end) {
            JS_FreeValue(c, v);
            v = json_error(&j, "unexpected data after the value");
        }
    }
    free(j.tmp);
    return v;
}

/* pending_json parses the run's pending result of n bytes. */
static JSValue pending_json(JSContext *c, int32_t n)
{
    JSValue v;
    uint8_t *buf;
    if (n <= 0)
        return JS_ThrowSyntaxError(c, "JSON: the host answered nothing");
    buf = malloc((size_t)n);
    if (!buf) {
        oom = 1;
        return JS_ThrowOutOfMemory(c);
    }
    ll_result(buf, n);
    v = parse_json(c, buf, (size_t)n);
    free(buf);
    return v;
}

/* monoMillis: the monotonic clock (WASI, the sandbox's virtual clock). */
static JSValue n_mono_millis(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return JS_NewFloat64(c, (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6);
}

static JSValue n_random(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    int32_t n;
    uint8_t *buf;
    JSValue v;
    if (JS_ToInt32Clamp(c, &n, argv[0], 0, 1 << 20, 0))
        return JS_EXCEPTION;
    buf = malloc(n ? (size_t)n : 1);
    if (!buf) {
        oom = 1;
        return JS_ThrowOutOfMemory(c);
    }
    ll_random(buf, n);
    v = new_buffer(c, buf, (size_t)n);
    free(buf);
    return v;
}

static JSValue n_blake3(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    const uint8_t *p;
    size_t n;
    const char *str;
    uint8_t out[32];
    if (bytes(c, argv[0], &p, &n, &str))
        return JS_EXCEPTION;
    ll_blake3(p, (int32_t)n, out);
    free_bytes(c, str);
    return new_buffer(c, out, sizeof out);
}

static JSValue n_ed25519_verify(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    const uint8_t *pub, *msg, *sig;
    size_t npub, nmsg, nsig;
    const char *s1 = NULL, *s2 = NULL, *s3 = NULL;
    int ok = 0;
    if (bytes(c, argv[0], &pub, &npub, &s1) == 0 && bytes(c, argv[1], &msg, &nmsg, &s2) == 0 &&
        bytes(c, argv[2], &sig, &nsig, &s3) == 0) {
        ok = npub == 32 && nsig == 64 && ll_ed25519_verify(pub, msg, (int32_t)nmsg, sig) == 1;
        free_bytes(c, s1);
        free_bytes(c, s2);
        free_bytes(c, s3);
        return JS_NewBool(c, ok);
    }
    free_bytes(c, s1);
    free_bytes(c, s2);
    free_bytes(c, s3);
    return JS_EXCEPTION;
}

static JSValue n_utf8_encode(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    size_t n;
    JSValue v;
    const char *s = JS_ToCStringLen(c, &n, argv[0]);
    if (!s)
        return JS_EXCEPTION;
    v = new_buffer(c, s, n);
    JS_FreeCString(c, s);
    return v;
}

static JSValue n_utf8_decode(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    const uint8_t *p;
    size_t n;
    const char *str;
    JSValue v;
    if (bytes(c, argv[0], &p, &n, &str))
        return JS_EXCEPTION;
    v = JS_NewStringLen(c, (const char *)p, n);
    free_bytes(c, str);
    return v;
}

/* evalScript(source, name): a global script; returns its completion value. */
static JSValue n_eval_script(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    size_t n;
    JSValue v;
    const char *src = JS_ToCStringLen(c, &n, argv[0]);
    const char *name = JS_ToCString(c, argv[1]);
    if (!src || !name) {
        JS_FreeCString(c, src);
        JS_FreeCString(c, name);
        return JS_EXCEPTION;
    }
    v = JS_Eval(c, src, n, name, JS_EVAL_TYPE_GLOBAL);
    JS_FreeCString(c, src);
    JS_FreeCString(c, name);
    return v;
}

/* The only module a guest can import is its own source, under the fixed
   specifier the driver below uses: there is no file system. */
static JSModuleDef *load_module(JSContext *c, const char *name, void *opaque)
{
    if (entry_module && strcmp(name, "logline:entry") == 0) {
        JSModuleDef *m = entry_module;
        entry_module = NULL;
        return m;
    }
    JS_ThrowReferenceError(c, "cannot import '%s': a LogLine guest is one self-contained module", name);
    return NULL;
}

static const char driver[] =
    "import * as ns from 'logline:entry';\n"
    "globalThis.__logline_ns__ = ns;\n";

/* compileModule(source, name): evaluates an ES module; returns its namespace. */
static JSValue n_compile_module(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    size_t n;
    JSValue fn, ns, global;
    JSAtom key;
    const char *src = JS_ToCStringLen(c, &n, argv[0]);
    const char *name = JS_ToCString(c, argv[1]);
    if (!src || !name) {
        JS_FreeCString(c, src);
        JS_FreeCString(c, name);
        return JS_EXCEPTION;
    }
    fn = JS_Eval(c, src, n, name, JS_EVAL_TYPE_MODULE | JS_EVAL_FLAG_COMPILE_ONLY);
    JS_FreeCString(c, src);
    JS_FreeCString(c, name);
    if (JS_IsException(fn))
        return fn;
    entry_module = JS_VALUE_GET_PTR(fn);
    JS_FreeValue(c, fn);
    fn = JS_Eval(c, driver, sizeof driver - 1, "<logline>", JS_EVAL_TYPE_MODULE);
    entry_module = NULL;
    if (JS_IsException(fn))
        return fn;
    JS_FreeValue(c, fn);
    global = JS_GetGlobalObject(c);
    key = JS_NewAtom(c, "__logline_ns__");
    ns = JS_GetProperty(c, global, key);
    JS_DeleteProperty(c, global, key, 0);
    JS_FreeAtom(c, key);
    JS_FreeValue(c, global);
    return ns;
}

/* Math.random: xorshift128+, seeded per run from the run's seeded stream
   (the sandbox records it), so runs differ and a replay reproduces them. */
static JSValue n_math_random(JSContext *c, JSValueConst this, int argc, JSValueConst *argv)
{
    uint64_t s1, s0;
    union {
        uint64_t u;
        double d;
    } u;
    if (rng_s[0] == 0 && rng_s[1] == 0) {
        ll_random(rng_s, sizeof rng_s);
        if (rng_s[0] == 0 && rng_s[1] == 0)
            rng_s[0] = 1;
    }
    s1 = rng_s[0];
    s0 = rng_s[1];
    rng_s[0] = s0;
    s1 ^= s1 << 23;
    s1 ^= s1 >> 17;
    s1 ^= s0 ^ (s0 >> 26);
    rng_s[1] = s1;
    u.u = ((s0 + s1) >> 12) | 0x3ff0000000000000ULL; /* [1, 2) */
    return JS_NewFloat64(c, u.d - 1.0);
}

static const JSCFunctionListEntry natives[] = {
    JS_CFUNC_DEF("log", 2, n_log),
    JS_CFUNC_DEF("call", 2, n_call),
    JS_CFUNC_DEF("lastError", 0, n_last_error),
    JS_CFUNC_DEF("lock", 2, n_lock),
    JS_CFUNC_DEF("pending", 0, n_pending),
    JS_CFUNC_DEF("nowISO", 0, n_now_iso),
    JS_CFUNC_DEF("hex", 1, n_hex),
    JS_CFUNC_DEF("fromHex", 1, n_from_hex),
    JS_CFUNC_DEF("monoMillis", 0, n_mono_millis),
    JS_CFUNC_DEF("random", 1, n_random),
    JS_CFUNC_DEF("blake3", 1, n_blake3),
    JS_CFUNC_DEF("ed25519Verify", 3, n_ed25519_verify),
    JS_CFUNC_DEF("utf8Encode", 1, n_utf8_encode),
    JS_CFUNC_DEF("utf8Decode", 1, n_utf8_decode),
    JS_CFUNC_DEF("evalScript", 2, n_eval_script),
    JS_CFUNC_DEF("compileModule", 2, n_compile_module),
    JS_CFUNC_DEF("mathRandom", 0, n_math_random),
};

/* ---- lifecycle ---- */

/* fail logs what went wrong at error level (the sandbox puts error lines in
   the run's error message) and returns the run's non-zero code. */
static int fail(const char *what)
{
    JSValue exc = JS_GetException(ctx), msg;
    const char *s = NULL;
    size_t n = 0;
    if (!oom) {
        JSValue describe = JS_GetPropertyStr(ctx, api, "describe");
        msg = JS_Call(ctx, describe, api, 1, (JSValueConst *)&exc);
        JS_FreeValue(ctx, describe);
        if (!JS_IsException(msg))
            s = JS_ToCStringLen(ctx, &n, msg);
        else
            JS_FreeValue(ctx, JS_GetException(ctx));
        JS_FreeValue(ctx, msg);
    }
    if (oom) {
        static const char m[] = "out of memory: the run reached its memory limit";
        log_text(LOG_ERROR, m, sizeof m - 1);
    } else if (s) {
        log_text(LOG_ERROR, s, n);
    } else {
        log_text(LOG_ERROR, what, strlen(what));
    }
    JS_FreeCString(ctx, s);
    JS_FreeValue(ctx, exc);
    return oom ? 2 : 1;
}

/* read_input returns the input of the call, parsed (no input: null). */
static JSValue read_input(void)
{
    int32_t n = ll_input(NULL, 0);
    uint8_t *buf;
    JSValue v;
    if (n <= 0)
        return JS_NULL;
    buf = malloc((size_t)n);
    if (!buf) {
        oom = 1;
        return JS_ThrowOutOfMemory(ctx);
    }
    ll_input(buf, n);
    v = parse_json(ctx, buf, (size_t)n);
    free(buf);
    return v;
}

static JSValue call_api(const char *fn, int argc, JSValueConst *argv)
{
    JSValue f = JS_GetPropertyStr(ctx, api, fn), r;
    r = JS_Call(ctx, f, api, argc, argv);
    JS_FreeValue(ctx, f);
    return r;
}

/* write_output sets the call's output to the JS string v. */
static void write_output(JSValueConst v)
{
    size_t n;
    const char *s = JS_ToCStringLen(ctx, &n, v);
    if (s) {
        ll_output(s, (int32_t)n);
        JS_FreeCString(ctx, s);
    }
}

__attribute__((constructor)) static void init(void)
{
    JSValue setup, natives_obj, math, global, fn;
    rt = JS_NewRuntime2(&malloc_funcs, NULL);
    if (!rt)
        abort();
    /* The stack is the first 512 KiB of memory (-z stack-size,
       --stack-first): JS recursion about 1,600 deep. The limit keeps a
       margin for the C frames below the interpreter's last check; past
       the stack, a store traps. */
    JS_SetMaxStackSize(rt, 512 * 1024 - 64 * 1024);
    JS_SetModuleLoaderFunc(rt, NULL, load_module, NULL);
    ctx = JS_NewContext(rt);
    if (!ctx)
        abort();
    global = JS_GetGlobalObject(ctx);
    math = JS_GetPropertyStr(ctx, global, "Math");
    fn = JS_NewCFunction(ctx, n_math_random, "random", 0);
    JS_DefinePropertyValueStr(ctx, math, "random", fn, JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
    JS_FreeValue(ctx, math);
    JS_FreeValue(ctx, global);

    natives_obj = JS_NewObject(ctx);
    JS_SetPropertyFunctionList(ctx, natives_obj, natives, sizeof natives / sizeof natives[0]);
    setup = JS_Eval(ctx, prelude, sizeof prelude - 1, "<logline prelude>", JS_EVAL_TYPE_GLOBAL);
    if (JS_IsException(setup)) {
        api = JS_UNDEFINED;
        fail("the prelude failed to load");
        abort();
    }
    api = JS_Call(ctx, setup, JS_UNDEFINED, 1, (JSValueConst *)&natives_obj);
    JS_FreeValue(ctx, setup);
    JS_FreeValue(ctx, natives_obj);
    if (JS_IsException(api)) {
        api = JS_UNDEFINED;
        fail("the prelude failed to start");
        abort();
    }
    /* What init allocated is the snapshot: collect now, so no run begins
       with garbage of ours to trace. */
    JS_RunGC(rt);
}

/* logline_prepare: input {"kind","source","name"}; compiles the source. A
   failure sets the output to its message (with line and column for a syntax
   error) and returns 1. */
EXPORT("logline_prepare") int logline_prepare(void)
{
    JSValue in, r;
    JS_UpdateStackTop(rt);
    oom = 0;
    in = read_input();
    if (JS_IsException(in))
        return fail("reading the input failed");
    r = call_api("prepare", 1, (JSValueConst *)&in);
    JS_FreeValue(ctx, in);
    if (JS_IsException(r)) {
        JSValue exc = JS_GetException(ctx);
        JSValue msg = call_api("compileError", 1, (JSValueConst *)&exc);
        JS_FreeValue(ctx, exc);
        if (JS_IsException(msg) || oom)
            return fail("compiling failed");
        write_output(msg);
        JS_FreeValue(ctx, msg);
        return 1;
    }
    JS_FreeValue(ctx, r);
    JS_RunGC(rt);
    return oom ? fail("out of memory") : 0;
}

EXPORT("run") int run(void)
{
    JSValue in, r;
    JSContext *c1;
    JS_UpdateStackTop(rt);
    oom = 0;
    in = read_input();
    if (JS_IsException(in))
        return fail("reading the input failed");
    r = call_api("run", 1, (JSValueConst *)&in);
    JS_FreeValue(ctx, in);
    if (JS_IsException(r))
        return fail("the run failed");
    JS_FreeValue(ctx, r);
    /* Settle: promise jobs, then the prelude's virtual timers, until
       neither has work left. */
    for (;;) {
        while (JS_IsJobPending(rt)) {
            if (JS_ExecutePendingJob(rt, &c1) < 0)
                return fail("a promise job failed");
        }
        r = call_api("pump", 0, NULL);
        if (JS_IsException(r))
            return fail("a timer failed");
        if (!JS_ToBool(ctx, r))
            break;
        JS_FreeValue(ctx, r);
    }
    r = call_api("finish", 0, NULL);
    if (JS_IsException(r))
        return fail("the run failed");
    if (oom) {
        JS_FreeValue(ctx, r);
        return fail("out of memory");
    }
    write_output(r);
    JS_FreeValue(ctx, r);
    return 0;
}
