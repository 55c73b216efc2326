/*
 * Tests of the C reference against the golden vectors, the Rust implementation and random input.
 *
 *   test_vectors VECTOR_FILE [DIFF_FILE]
 *
 * VECTOR_FILE (hardware/vectors/link-v1.txt): every `up` vector is built with the C encoders
 * from the same values as shared/tests/link_vectors.rs and compared byte for byte; every `down`
 * vector is decoded and every field checked. A vector this file does not know, or one it
 * expects and does not find, is a failure.
 *
 * DIFF_FILE (optional; written by tests/it/c_reference.rs from random and mutated messages):
 *   up HEX ADDRESS KIND FIELDS...   C must encode the fields to exactly HEX
 *   down HEX ok ADDRESS KIND FIELDS...  /  down HEX err LABEL
 *                                   C must decode HEX (a frame, no delimiter; `-` when empty)
 *                                   to the same message, or fail with the same error
 *
 * Then unit checks (CRC, COBS, error codes, refused arguments, small buffers) and a robustness
 * run: a few hundred thousand random and mutated frames through the accumulator and decoder
 * (fixed seed), checking results stay within the rules and a valid frame after garbage decodes.
 *
 * Exit status 0 when everything passed; otherwise every failure is printed (which vector,
 * expected vs actual hex) and the status is 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mclink.h"

static unsigned long failures;
static unsigned long checks;

#define FAIL(...)                                                                                \
    do {                                                                                         \
        failures++;                                                                              \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                     \
        fprintf(stderr, __VA_ARGS__);                                                            \
        fputc('\n', stderr);                                                                     \
    } while (0)

#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        checks++;                                                                                \
        if (!(cond)) {                                                                           \
            FAIL(__VA_ARGS__);                                                                   \
        }                                                                                        \
    } while (0)

/* Stops early when a loop keeps failing, so the output stays readable. */
#define BAIL_IF_FLOODED()                                                                        \
    do {                                                                                         \
        if (failures > 50) {                                                                     \
            fprintf(stderr, "too many failures, stopping\n");                                    \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

static void hex_print(FILE *f, const uint8_t *b, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        fprintf(f, "%02x", b[i]);
    }
}

static void report_bytes(const char *what, const uint8_t *exp, size_t exp_n, const uint8_t *got,
                         size_t got_n) {
    fprintf(stderr, "  %s\n  expected ", what);
    hex_print(stderr, exp, exp_n);
    fprintf(stderr, "\n  actual   ");
    hex_print(stderr, got, got_n);
    fprintf(stderr, "\n");
}

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parses hex into `out`; returns the byte count or -1. */
static long hex_parse(const char *s, uint8_t *out, size_t cap) {
    size_t n = strlen(s), i;
    if (n % 2 != 0 || n / 2 > cap) return -1;
    for (i = 0; i < n / 2; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi * 16 + lo);
    }
    return (long)(n / 2);
}

/* Splits `line` in place at spaces; returns the number of tokens. */
static size_t split(char *line, char **tok, size_t max) {
    size_t n = 0;
    char *p = line;
    while (*p != '\0' && n < max) {
        while (*p == ' ') p++;
        if (*p == '\0') break;
        tok[n++] = p;
        while (*p != ' ' && *p != '\0') p++;
        if (*p == ' ') *p++ = '\0';
    }
    return n;
}

static int read_line(FILE *f, char *buf, size_t cap, const char *path, unsigned long lineno) {
    size_t n;
    if (fgets(buf, (int)cap, f) == NULL) return 0;
    n = strlen(buf);
    if (n > 0 && buf[n - 1] == '\n') {
        buf[--n] = '\0';
    } else if (!feof(f)) {
        fprintf(stderr, "FAIL %s:%lu: line longer than %lu bytes\n", path, lineno,
                (unsigned long)cap);
        exit(1);
    }
    if (n > 0 && buf[n - 1] == '\r') buf[--n] = '\0';
    return 1;
}

/* ---- PRNG (xorshift64*, fixed seed: failures are reproducible) ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

static uint32_t rnd_below(uint32_t n) {
    return n == 0 ? 0 : (uint32_t)(rnd() % n);
}

/* ---- The golden vectors: the same values as shared/tests/link_vectors.rs ---- */

static const char *const EIGHT[8] = {"temperature", "humidity", "battery", "rssi",
                                     "pressure",    "wind",     "rain",    "solar"};
static const char *const TWO[2] = {"temperature", "battery"};

static mclink_status_t up_hello(uint8_t *o, size_t c, size_t *n) {
    mclink_hello_t h = {MCLINK_VERSION, "MC-1001-STN", "1.0.0", 5000, 2000, TWO, 2};
    return mclink_uplink_hello(0, &h, o, c, n);
}
static mclink_status_t up_hello_eight(uint8_t *o, size_t c, size_t *n) {
    mclink_hello_t h = {MCLINK_VERSION, "MC-1002-STN", "2.1.0-rc1", 1000, 1000, EIGHT, 8};
    return mclink_uplink_hello(0, &h, o, c, n);
}
static mclink_status_t up_heartbeat(uint8_t *o, size_t c, size_t *n) {
    return mclink_uplink_heartbeat(0, 7, 1234, o, c, n);
}
static mclink_status_t up_heartbeat_5(uint8_t *o, size_t c, size_t *n) {
    return mclink_uplink_heartbeat(5, 300, 86400000u, o, c, n);
}
static mclink_status_t up_telemetry_two(uint8_t *o, size_t c, size_t *n) {
    const float v[2] = {21.5f, 3.71f};
    return mclink_uplink_telemetry(0, 42, 0x3u, v, 2, o, c, n);
}
static mclink_status_t up_telemetry_changed(uint8_t *o, size_t c, size_t *n) {
    const float v[1] = {3.7f};
    return mclink_uplink_telemetry(0, 43, 0x2u, v, 1, o, c, n);
}
static mclink_status_t up_telemetry_eight(uint8_t *o, size_t c, size_t *n) {
    const float v[8] = {21.5f, 48.25f, 3.71f, -67.0f, 1013.25f, 3.5f, 0.0f, 412.0f};
    return mclink_uplink_telemetry(0, 1000, 0xFFu, v, 8, o, c, n);
}
static mclink_status_t up_ack_done(uint8_t *o, size_t c, size_t *n) {
    return mclink_uplink_ack(0, 3, MCLINK_RESULT_DONE, o, c, n);
}
static mclink_status_t up_ack_invalid(uint8_t *o, size_t c, size_t *n) {
    return mclink_uplink_ack(0, 200, MCLINK_RESULT_INVALID_ARGUMENT, o, c, n);
}
static mclink_status_t up_error_crc(uint8_t *o, size_t c, size_t *n) {
    return mclink_uplink_error(0, MCLINK_LINK_ERROR_CRC_MISMATCH, 0, o, c, n);
}
static mclink_status_t up_error_version(uint8_t *o, size_t c, size_t *n) {
    return mclink_uplink_error(0, MCLINK_LINK_ERROR_VERSION_MISMATCH, 1, o, c, n);
}

typedef mclink_status_t (*build_fn)(uint8_t *out, size_t cap, size_t *len);

static const struct {
    const char *name;
    build_fn build;
} UPS[] = {
    {"hello", up_hello},
    {"hello_eight_readings", up_hello_eight},
    {"heartbeat", up_heartbeat},
    {"heartbeat_multidrop_address_5", up_heartbeat_5},
    {"telemetry_two_readings", up_telemetry_two},
    {"telemetry_changed_only", up_telemetry_changed},
    {"telemetry_eight_readings", up_telemetry_eight},
    {"ack_done", up_ack_done},
    {"ack_invalid_argument", up_ack_invalid},
    {"error_crc_mismatch", up_error_crc},
    {"error_version_mismatch", up_error_version},
};
#define N_UPS (sizeof UPS / sizeof UPS[0])

static mclink_downlink_t accept_msg(uint8_t address, uint8_t protocol, uint32_t hb, uint32_t tm) {
    mclink_downlink_t d;
    memset(&d, 0, sizeof d);
    d.address = address;
    d.kind = MCLINK_DOWN_ACCEPT;
    d.as.accept.protocol = protocol;
    d.as.accept.heartbeat_ms = hb;
    d.as.accept.telemetry_ms = tm;
    return d;
}
static mclink_downlink_t command_msg(uint8_t address, uint32_t id, mclink_action_t action,
                                     uint32_t ms) {
    mclink_downlink_t d;
    memset(&d, 0, sizeof d);
    d.address = address;
    d.kind = MCLINK_DOWN_COMMAND;
    d.as.command.id = id;
    d.as.command.action = action;
    d.as.command.ms = ms;
    return d;
}
static mclink_downlink_t error_msg(uint8_t address, mclink_link_error_code_t code,
                                   uint8_t supported) {
    mclink_downlink_t d;
    memset(&d, 0, sizeof d);
    d.address = address;
    d.kind = MCLINK_DOWN_ERROR;
    d.as.error.code = code;
    d.as.error.supported = supported;
    return d;
}
static mclink_downlink_t refuse_msg(uint8_t address, mclink_refuse_reason_t reason) {
    mclink_downlink_t d;
    memset(&d, 0, sizeof d);
    d.address = address;
    d.kind = MCLINK_DOWN_REFUSE;
    d.as.refuse = reason;
    return d;
}

typedef struct {
    const char *name;
    mclink_downlink_t msg;
} down_vector_t;

static down_vector_t DOWNS[9];
#define N_DOWNS (sizeof DOWNS / sizeof DOWNS[0])

static void init_downs(void) {
    size_t i = 0;
    DOWNS[i].name = "accept";
    DOWNS[i++].msg = accept_msg(0, 1, 5000, 2000);
    DOWNS[i].name = "command_set_heartbeat_interval";
    DOWNS[i++].msg = command_msg(0, 3, MCLINK_ACTION_SET_HEARTBEAT_INTERVAL, 1000);
    DOWNS[i].name = "command_set_telemetry_interval";
    DOWNS[i++].msg = command_msg(0, 4, MCLINK_ACTION_SET_TELEMETRY_INTERVAL, 500);
    DOWNS[i].name = "command_resend_state";
    DOWNS[i++].msg = command_msg(0, 5, MCLINK_ACTION_RESEND_STATE, 0);
    DOWNS[i].name = "command_reboot_address_5";
    DOWNS[i++].msg = command_msg(5, 6, MCLINK_ACTION_REBOOT, 0);
    DOWNS[i].name = "refuse_unknown_module";
    DOWNS[i++].msg = refuse_msg(0, MCLINK_REFUSE_UNKNOWN_MODULE);
    DOWNS[i].name = "refuse_handshake_required";
    DOWNS[i++].msg = refuse_msg(0, MCLINK_REFUSE_HANDSHAKE_REQUIRED);
    DOWNS[i].name = "error_frame_too_long";
    DOWNS[i++].msg = error_msg(0, MCLINK_LINK_ERROR_FRAME_TOO_LONG, 0);
    DOWNS[i].name = "error_version_mismatch";
    DOWNS[i++].msg = error_msg(0, MCLINK_LINK_ERROR_VERSION_MISMATCH, 1);
}

/* Formats a decoded message for messages; `buf` holds at least 128 bytes. */
static const char *show(const mclink_downlink_t *d, char *buf) {
    switch (d->kind) {
    case MCLINK_DOWN_ACCEPT:
        sprintf(buf, "address %u accept protocol %u heartbeat_ms %lu telemetry_ms %lu",
                d->address, d->as.accept.protocol, (unsigned long)d->as.accept.heartbeat_ms,
                (unsigned long)d->as.accept.telemetry_ms);
        break;
    case MCLINK_DOWN_COMMAND:
        sprintf(buf, "address %u command id %lu action %d ms %lu", d->address,
                (unsigned long)d->as.command.id, (int)d->as.command.action,
                (unsigned long)d->as.command.ms);
        break;
    case MCLINK_DOWN_ERROR:
        sprintf(buf, "address %u error code %d supported %u", d->address, (int)d->as.error.code,
                d->as.error.supported);
        break;
    case MCLINK_DOWN_REFUSE:
        sprintf(buf, "address %u refuse reason %d", d->address, (int)d->as.refuse);
        break;
    default:
        sprintf(buf, "kind %d", (int)d->kind);
    }
    return buf;
}

/* Field by field (a union's padding is not compared). */
static int same_downlink(const mclink_downlink_t *a, const mclink_downlink_t *b) {
    if (a->address != b->address || a->kind != b->kind) return 0;
    switch (a->kind) {
    case MCLINK_DOWN_ACCEPT:
        return a->as.accept.protocol == b->as.accept.protocol &&
               a->as.accept.heartbeat_ms == b->as.accept.heartbeat_ms &&
               a->as.accept.telemetry_ms == b->as.accept.telemetry_ms;
    case MCLINK_DOWN_COMMAND:
        return a->as.command.id == b->as.command.id &&
               a->as.command.action == b->as.command.action &&
               a->as.command.ms == b->as.command.ms;
    case MCLINK_DOWN_ERROR:
        return a->as.error.code == b->as.error.code &&
               a->as.error.supported == b->as.error.supported;
    case MCLINK_DOWN_REFUSE: return a->as.refuse == b->as.refuse;
    }
    return 0;
}

/* Decodes a copy of `frame` from an exactly-sized heap buffer (so that ASan sees over-reads). */
static mclink_status_t decode_copy(const uint8_t *frame, size_t len, mclink_downlink_t *out) {
    uint8_t *copy = (uint8_t *)malloc(len > 0 ? len : 1);
    mclink_status_t st;
    if (copy == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (len > 0) memcpy(copy, frame, len);
    st = mclink_decode_downlink(len > 0 ? copy : NULL, len, out);
    free(copy);
    return st;
}

/* Feeds `bytes` through a fresh accumulator; expects exactly one frame, returns its decode. */
static mclink_status_t decode_via_accumulator(const uint8_t *bytes, size_t n,
                                              mclink_downlink_t *out, int *frames) {
    mclink_accumulator_t acc;
    mclink_status_t st = MCLINK_ERR_ARGUMENT;
    size_t i;
    *frames = 0;
    mclink_accumulator_init(&acc);
    for (i = 0; i < n; i++) {
        uint8_t *frame;
        size_t len;
        mclink_acc_t got = mclink_accumulator_push(&acc, bytes[i], &frame, &len);
        if (got == MCLINK_ACC_FRAME) {
            (*frames)++;
            st = mclink_decode_downlink(frame, len, out);
        } else if (got == MCLINK_ACC_OVERFLOW) {
            (*frames)++;
            st = MCLINK_ERR_TOO_LONG;
        }
    }
    return st;
}

/* Checks one encoder for every output capacity below and at the needed size: OVERFLOW below,
 * the exact bytes at, never a write past the capacity. */
static void check_capacities(const char *name, build_fn build, const uint8_t *exp, size_t n) {
    size_t cap;
    for (cap = 0; cap <= n; cap++) {
        uint8_t *buf = (uint8_t *)malloc(cap + 16);
        size_t len = 12345, i;
        mclink_status_t st;
        if (buf == NULL) exit(2);
        memset(buf, 0xA5, cap + 16);
        st = build(buf, cap, &len);
        if (cap < n) {
            CHECK(st == MCLINK_ERR_OVERFLOW && len == 0,
                  "%s: capacity %lu of %lu: status %s len %lu, expected frame_overflow", name,
                  (unsigned long)cap, (unsigned long)n, mclink_status_str(st),
                  (unsigned long)len);
        } else {
            CHECK(st == MCLINK_OK && len == n && memcmp(buf, exp, n) == 0,
                  "%s: exact capacity %lu: status %s", name, (unsigned long)cap,
                  mclink_status_str(st));
        }
        for (i = cap; i < cap + 16; i++) {
            CHECK(buf[i] == 0xA5, "%s: capacity %lu: byte %lu written past the buffer", name,
                  (unsigned long)cap, (unsigned long)i);
        }
        free(buf);
        BAIL_IF_FLOODED();
    }
}

static void check_vector_file(const char *path) {
    static char line[1 << 16];
    static uint8_t expected[MCLINK_MAX_WIRE_LEN + 1];
    static uint8_t actual[MCLINK_MAX_WIRE_LEN];
    int seen_up[N_UPS] = {0}, seen_down[N_DOWNS] = {0};
    unsigned long lineno = 0, vectors = 0;
    size_t i;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        FAIL("cannot open the vector file %s", path);
        return;
    }
    while (read_line(f, line, sizeof line, path, ++lineno)) {
        char *tok[4];
        size_t ntok;
        long n;
        if (line[0] == '#' || line[0] == '\0') continue;
        ntok = split(line, tok, 4);
        if (ntok != 3) {
            FAIL("%s:%lu: expected `up|down NAME HEX`, got %lu fields", path, lineno,
                 (unsigned long)ntok);
            continue;
        }
        n = hex_parse(tok[2], expected, sizeof expected);
        if (n < 2 || expected[n - 1] != 0) {
            FAIL("%s:%lu: %s %s: not hex of a frame ending in 00", path, lineno, tok[0], tok[1]);
            continue;
        }
        vectors++;
        if (strcmp(tok[0], "up") == 0) {
            for (i = 0; i < N_UPS && strcmp(UPS[i].name, tok[1]) != 0; i++) {
            }
            if (i == N_UPS) {
                FAIL("%s:%lu: unknown vector `up %s`: add it to test_vectors.c", path, lineno,
                     tok[1]);
                continue;
            }
            if (seen_up[i]++) FAIL("%s:%lu: vector `up %s` appears twice", path, lineno, tok[1]);
            {
                size_t len = 0;
                mclink_status_t st = UPS[i].build(actual, sizeof actual, &len);
                checks++;
                if (st != MCLINK_OK || len != (size_t)n || memcmp(actual, expected, len) != 0) {
                    FAIL("vector `up %s` (%s:%lu): C encoding differs (status %s)", tok[1], path,
                         lineno, mclink_status_str(st));
                    report_bytes(tok[1], expected, (size_t)n, actual, len);
                }
                check_capacities(tok[1], UPS[i].build, expected, (size_t)n);
            }
        } else if (strcmp(tok[0], "down") == 0) {
            mclink_downlink_t got;
            char a[128], b[128];
            mclink_status_t st;
            int frames;
            for (i = 0; i < N_DOWNS && strcmp(DOWNS[i].name, tok[1]) != 0; i++) {
            }
            if (i == N_DOWNS) {
                FAIL("%s:%lu: unknown vector `down %s`: add it to test_vectors.c", path, lineno,
                     tok[1]);
                continue;
            }
            if (seen_down[i]++) {
                FAIL("%s:%lu: vector `down %s` appears twice", path, lineno, tok[1]);
            }
            st = decode_copy(expected, (size_t)n - 1, &got);
            CHECK(st == MCLINK_OK && same_downlink(&got, &DOWNS[i].msg),
                  "vector `down %s` (%s:%lu): status %s\n  expected %s\n  actual   %s", tok[1],
                  path, lineno, mclink_status_str(st), show(&DOWNS[i].msg, a), show(&got, b));
            st = decode_via_accumulator(expected, (size_t)n, &got, &frames);
            CHECK(frames == 1 && st == MCLINK_OK && same_downlink(&got, &DOWNS[i].msg),
                  "vector `down %s` through the accumulator: %d frames, status %s", tok[1],
                  frames, mclink_status_str(st));
        } else {
            FAIL("%s:%lu: unknown direction `%s`", path, lineno, tok[0]);
        }
    }
    fclose(f);
    for (i = 0; i < N_UPS; i++) {
        CHECK(seen_up[i], "%s: expected vector `up %s` is missing", path, UPS[i].name);
    }
    for (i = 0; i < N_DOWNS; i++) {
        CHECK(seen_down[i], "%s: expected vector `down %s` is missing", path, DOWNS[i].name);
    }
    printf("vectors: %lu in %s (%lu up and %lu down expected)\n", vectors, path,
           (unsigned long)N_UPS, (unsigned long)N_DOWNS);
}

/* ---- Differential file from the Rust implementation ---- */

static int parse_u64(const char *s, uint64_t *v) {
    char *end;
    unsigned long long x;
    if (s == NULL || *s == '\0') return 0;
    x = strtoull(s, &end, 10);
    if (*end != '\0') return 0;
    *v = (uint64_t)x;
    return 1;
}

static int parse_u32(const char *s, uint32_t *v) {
    uint64_t x;
    if (!parse_u64(s, &x) || x > 0xFFFFFFFFu) return 0;
    *v = (uint32_t)x;
    return 1;
}

static int parse_u8(const char *s, uint8_t *v) {
    uint64_t x;
    if (!parse_u64(s, &x) || x > 0xFFu) return 0;
    *v = (uint8_t)x;
    return 1;
}

static int parse_f32_bits(const char *s, float *v) {
    uint8_t b[4];
    uint32_t bits;
    if (hex_parse(s, b, 4) != 4) return 0;
    bits = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    memcpy(v, &bits, sizeof *v);
    return 1;
}

static mclink_status_t status_from_label(const char *label) {
    int s;
    for (s = MCLINK_OK; s <= MCLINK_ERR_ARGUMENT; s++) {
        if (strcmp(mclink_status_str((mclink_status_t)s), label) == 0) return (mclink_status_t)s;
    }
    return (mclink_status_t)-1;
}

/* `up HEX ADDRESS KIND FIELDS...`: encodes the fields with C; 1 if it could parse the line. */
static int diff_up(char **tok, size_t ntok, const uint8_t *exp, size_t n, unsigned long lineno) {
    static uint8_t out[MCLINK_MAX_WIRE_LEN];
    size_t len = 0;
    uint8_t address;
    mclink_status_t st;
    const char *kind;
    if (ntok < 4 || !parse_u8(tok[2], &address)) return 0;
    kind = tok[3];
    if (strcmp(kind, "heartbeat") == 0) {
        uint32_t seq;
        uint64_t uptime;
        if (ntok != 6 || !parse_u32(tok[4], &seq) || !parse_u64(tok[5], &uptime)) return 0;
        st = mclink_uplink_heartbeat(address, seq, uptime, out, sizeof out, &len);
    } else if (strcmp(kind, "telemetry") == 0) {
        uint32_t seq, mask, count, i;
        float values[MCLINK_MAX_READINGS];
        if (ntok < 7 || !parse_u32(tok[4], &seq) || !parse_u32(tok[5], &mask) ||
            !parse_u32(tok[6], &count) || count > MCLINK_MAX_READINGS || ntok != 7 + count) {
            return 0;
        }
        for (i = 0; i < count; i++) {
            if (!parse_f32_bits(tok[7 + i], &values[i])) return 0;
        }
        st = mclink_uplink_telemetry(address, seq, mask, values, count, out, sizeof out, &len);
    } else if (strcmp(kind, "ack") == 0) {
        uint32_t command;
        uint8_t result;
        if (ntok != 6 || !parse_u32(tok[4], &command) || !parse_u8(tok[5], &result)) return 0;
        st = mclink_uplink_ack(address, command, result, out, sizeof out, &len);
    } else if (strcmp(kind, "error") == 0) {
        uint8_t code, supported;
        if (ntok != 6 || !parse_u8(tok[4], &code) || !parse_u8(tok[5], &supported)) return 0;
        st = mclink_uplink_error(address, code, supported, out, sizeof out, &len);
    } else if (strcmp(kind, "hello") == 0) {
        mclink_hello_t h;
        uint32_t count;
        if (ntok < 10 || !parse_u8(tok[4], &h.protocol) || !parse_u32(tok[7], &h.heartbeat_ms) ||
            !parse_u32(tok[8], &h.telemetry_ms) || !parse_u32(tok[9], &count) ||
            count > MCLINK_MAX_READINGS || ntok != 10 + count) {
            return 0;
        }
        h.module = tok[5];
        h.fw = tok[6];
        h.readings = (const char *const *)(tok + 10);
        h.reading_count = count;
        st = mclink_uplink_hello(address, &h, out, sizeof out, &len);
    } else {
        return 0;
    }
    checks++;
    if (st != MCLINK_OK || len != n || memcmp(out, exp, n) != 0) {
        FAIL("diff line %lu: up %s: C encoding differs from Rust (status %s)", lineno, kind,
             mclink_status_str(st));
        report_bytes("Rust vs C", exp, n, out, len);
    }
    return 1;
}

/* `down HEX ok ADDRESS KIND FIELDS...` or `down HEX err LABEL`. */
static int diff_down(char **tok, size_t ntok, const uint8_t *frame, size_t n,
                     unsigned long lineno) {
    mclink_downlink_t exp, got;
    mclink_status_t exp_st, st;
    char a[128], b[128];
    memset(&exp, 0, sizeof exp);
    if (ntok == 4 && strcmp(tok[2], "err") == 0) {
        exp_st = status_from_label(tok[3]);
        if ((int)exp_st < 0) return 0;
    } else if (ntok >= 5 && strcmp(tok[2], "ok") == 0) {
        const char *kind = tok[4];
        uint32_t x;
        exp_st = MCLINK_OK;
        if (!parse_u8(tok[3], &exp.address)) return 0;
        if (strcmp(kind, "accept") == 0 && ntok == 8) {
            exp.kind = MCLINK_DOWN_ACCEPT;
            if (!parse_u8(tok[5], &exp.as.accept.protocol) ||
                !parse_u32(tok[6], &exp.as.accept.heartbeat_ms) ||
                !parse_u32(tok[7], &exp.as.accept.telemetry_ms)) {
                return 0;
            }
        } else if (strcmp(kind, "command") == 0 && ntok == 8) {
            exp.kind = MCLINK_DOWN_COMMAND;
            if (!parse_u32(tok[5], &exp.as.command.id) || !parse_u32(tok[6], &x) ||
                !parse_u32(tok[7], &exp.as.command.ms)) {
                return 0;
            }
            exp.as.command.action = (mclink_action_t)x;
        } else if (strcmp(kind, "error") == 0 && ntok == 7) {
            exp.kind = MCLINK_DOWN_ERROR;
            if (!parse_u32(tok[5], &x) || !parse_u8(tok[6], &exp.as.error.supported)) return 0;
            exp.as.error.code = (mclink_link_error_code_t)x;
        } else if (strcmp(kind, "refuse") == 0 && ntok == 6) {
            exp.kind = MCLINK_DOWN_REFUSE;
            if (!parse_u32(tok[5], &x)) return 0;
            exp.as.refuse = (mclink_refuse_reason_t)x;
        } else {
            return 0;
        }
    } else {
        return 0;
    }
    st = decode_copy(frame, n, &got);
    checks++;
    if (st != exp_st || (st == MCLINK_OK && !same_downlink(&got, &exp))) {
        FAIL("diff line %lu: down %s: Rust says %s %s, C says %s %s", lineno, tok[1],
             mclink_status_str(exp_st), exp_st == MCLINK_OK ? show(&exp, a) : "",
             mclink_status_str(st), st == MCLINK_OK ? show(&got, b) : "");
    }
    return 1;
}

static void check_diff_file(const char *path) {
    static char line[1 << 16];
    static uint8_t bytes[4096];
    unsigned long lineno = 0, ups = 0, downs = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        FAIL("cannot open the differential file %s", path);
        return;
    }
    while (read_line(f, line, sizeof line, path, ++lineno)) {
        char *tok[64];
        size_t ntok;
        long n;
        int ok;
        if (line[0] == '#' || line[0] == '\0') continue;
        ntok = split(line, tok, 64);
        /* `-` stands for no bytes */
        n = ntok < 2 ? -1 : strcmp(tok[1], "-") == 0 ? 0 : hex_parse(tok[1], bytes, sizeof bytes);
        if (n < 0) {
            ok = 0;
        } else if (strcmp(tok[0], "up") == 0) {
            ok = diff_up(tok, ntok, bytes, (size_t)n, lineno);
            ups++;
        } else if (strcmp(tok[0], "down") == 0) {
            ok = diff_down(tok, ntok, bytes, (size_t)n, lineno);
            downs++;
        } else {
            ok = 0;
        }
        if (!ok) FAIL("%s:%lu: cannot parse this line", path, lineno);
        BAIL_IF_FLOODED();
    }
    fclose(f);
    CHECK(ups > 0 && downs > 0, "%s: no up or no down lines", path);
    printf("differential: %lu up and %lu down cases from %s\n", ups, downs, path);
}

/* ---- Unit checks ---- */

/* Builds a frame (no delimiter) around a raw body: address | body | CRC, COBS-encoded. */
static size_t make_frame(uint8_t address, const uint8_t *body, size_t body_len, uint8_t *out,
                         size_t cap) {
    uint8_t raw[MCLINK_MAX_FRAME_LEN + 64];
    uint16_t crc;
    size_t n = 0;
    if (body_len + 3 > sizeof raw) exit(2);
    raw[0] = address;
    if (body_len > 0) memcpy(raw + 1, body, body_len);
    crc = mclink_crc16(raw, body_len + 1);
    raw[body_len + 1] = (uint8_t)(crc & 0xFF);
    raw[body_len + 2] = (uint8_t)(crc >> 8);
    if (mclink_cobs_encode(raw, body_len + 3, out, cap, &n) != MCLINK_OK) exit(2);
    return n;
}

static void expect_body(const char *what, const uint8_t *body, size_t body_len,
                        mclink_status_t expected) {
    uint8_t frame[MCLINK_MAX_WIRE_LEN + 64];
    mclink_downlink_t d;
    size_t n = make_frame(0, body, body_len, frame, sizeof frame);
    mclink_status_t st = decode_copy(frame, n, &d);
    CHECK(st == expected, "%s: expected %s, got %s", what, mclink_status_str(expected),
          mclink_status_str(st));
}

static void unit_checks(void) {
    static const uint8_t check[] = "123456789";
    uint8_t buf[2048], out[2048];
    size_t n, i;
    mclink_downlink_t d;

    CHECK(MCLINK_MAX_FRAME_LEN == 1024 && MCLINK_MAX_ENCODED_LEN == 1029 &&
              MCLINK_MAX_WIRE_LEN == 1030,
          "constants differ from Rust's");
    CHECK(mclink_crc16(check, 9) == 0x29B1, "CRC check value: %04x",
          (unsigned)mclink_crc16(check, 9));
    CHECK(mclink_crc16(NULL, 0) == 0xFFFF && mclink_crc16(NULL, 5) == 0xFFFF, "CRC of nothing");
    CHECK(mclink_crc16_update(mclink_crc16(check, 4), check + 4, 5) == 0x29B1,
          "incremental CRC");

    { /* COBS: Wikipedia's examples, and a 254-byte run */
        static const struct {
            uint8_t src[4];
            size_t len;
            uint8_t enc[5];
            size_t enc_len;
        } ex[] = {
            {{0x00}, 1, {0x01, 0x01}, 2},
            {{0x00, 0x00}, 2, {0x01, 0x01, 0x01}, 3},
            {{0x11, 0x22, 0x00, 0x33}, 4, {0x03, 0x11, 0x22, 0x02, 0x33}, 5},
            {{0x11, 0x00, 0x00, 0x00}, 4, {0x02, 0x11, 0x01, 0x01, 0x01}, 5},
            {{0}, 0, {0x01}, 1},
        };
        for (i = 0; i < sizeof ex / sizeof ex[0]; i++) {
            mclink_status_t st = mclink_cobs_encode(ex[i].src, ex[i].len, out, sizeof out, &n);
            CHECK(st == MCLINK_OK && n == ex[i].enc_len && memcmp(out, ex[i].enc, n) == 0,
                  "COBS example %lu", (unsigned long)i);
            st = mclink_cobs_decode(out, n, &n);
            CHECK(st == MCLINK_OK && n == ex[i].len && memcmp(out, ex[i].src, n) == 0,
                  "COBS example %lu decodes back", (unsigned long)i);
        }
        memset(buf, 0x42, 254);
        CHECK(mclink_cobs_encode(buf, 254, out, sizeof out, &n) == MCLINK_OK && n == 256 &&
                  out[0] == 0xFF,
              "COBS of 254 non-zero bytes");
        CHECK(mclink_cobs_encode(buf, 3, out, 3, &n) == MCLINK_ERR_OVERFLOW, "COBS small buffer");
        CHECK(mclink_cobs_encode(buf, 3, out, 4, &n) == MCLINK_OK && n == 4, "COBS exact buffer");
        CHECK(mclink_cobs_encode(buf, 3, out, 0, &n) == MCLINK_ERR_OVERFLOW, "COBS no buffer");
        buf[0] = 0x05;
        buf[1] = 0x11;
        CHECK(mclink_cobs_decode(buf, 2, &n) == MCLINK_ERR_COBS, "COBS code past the end");
        buf[0] = 0x02;
        buf[1] = 0x00;
        CHECK(mclink_cobs_decode(buf, 2, &n) == MCLINK_ERR_COBS, "COBS zero inside");
        buf[0] = 0x00;
        CHECK(mclink_cobs_decode(buf, 1, &n) == MCLINK_ERR_COBS, "COBS zero code");
        CHECK(mclink_cobs_decode(NULL, 0, &n) == MCLINK_OK && n == 0, "COBS of nothing");
        CHECK(mclink_cobs_decode(NULL, 3, &n) == MCLINK_ERR_ARGUMENT, "COBS NULL");
        CHECK(mclink_cobs_encode(buf, 1, out, sizeof out, NULL) == MCLINK_ERR_ARGUMENT,
              "COBS NULL length");
    }

    { /* each FrameError, and the postcard corners */
        static const uint8_t accept[] = {0x00, 0x01, 0x88, 0x27, 0xd0, 0x0f};
        static const uint8_t accept_trailing[] = {0x00, 0x01, 0x88, 0x27, 0xd0, 0x0f, 0x00};
        static const uint8_t accept_truncated[] = {0x00, 0x01, 0x88, 0x27, 0xd0};
        static const uint8_t accept_noncanonical[] = {0x00, 0x01, 0x88, 0xa7, 0x80, 0x80, 0x00,
                                                      0xd0, 0x0f};
        static const uint8_t accept_max[] = {0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00};
        static const uint8_t accept_overflow[] = {0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00};
        static const uint8_t accept_six[] = {0x00, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00};
        static const uint8_t hb_99[] = {0x01, 0x03, 0x00, 0x63};
        static const uint8_t hb_100[] = {0x01, 0x03, 0x00, 0x64};
        static const uint8_t tm_max[] = {0x01, 0x03, 0x01, 0x80, 0xb8, 0x99, 0x29};
        static const uint8_t tm_max1[] = {0x01, 0x03, 0x01, 0x81, 0xb8, 0x99, 0x29};
        static const uint8_t action_4[] = {0x01, 0x03, 0x04};
        static const uint8_t reboot_extra[] = {0x01, 0x03, 0x03, 0x00};
        static const uint8_t refuse_4[] = {0x03, 0x04};
        static const uint8_t refuse_5[] = {0x03, 0x05};
        static const uint8_t error_5[] = {0x02, 0x05};
        static const uint8_t error_version_short[] = {0x02, 0x03};
        static const uint8_t tag_4[] = {0x04};
        static const uint8_t tag_80[] = {0x80, 0x00};
        static const uint8_t tag_only[] = {0x03};
        uint8_t frame[64];

        expect_body("accept", accept, sizeof accept, MCLINK_OK);
        expect_body("trailing byte", accept_trailing, sizeof accept_trailing,
                    MCLINK_ERR_MALFORMED);
        expect_body("truncated", accept_truncated, sizeof accept_truncated, MCLINK_ERR_MALFORMED);
        expect_body("non-canonical varint", accept_noncanonical, sizeof accept_noncanonical,
                    MCLINK_OK);
        expect_body("u32::MAX varint", accept_max, sizeof accept_max, MCLINK_OK);
        expect_body("varint above u32::MAX", accept_overflow, sizeof accept_overflow,
                    MCLINK_ERR_MALFORMED);
        expect_body("six-byte varint", accept_six, sizeof accept_six, MCLINK_ERR_MALFORMED);
        expect_body("heartbeat interval 99", hb_99, sizeof hb_99, MCLINK_ERR_INVALID);
        expect_body("heartbeat interval 100", hb_100, sizeof hb_100, MCLINK_OK);
        expect_body("telemetry interval 86400000", tm_max, sizeof tm_max, MCLINK_OK);
        expect_body("telemetry interval 86400001", tm_max1, sizeof tm_max1, MCLINK_ERR_INVALID);
        expect_body("action 4", action_4, sizeof action_4, MCLINK_ERR_MALFORMED);
        expect_body("reboot with a field", reboot_extra, sizeof reboot_extra,
                    MCLINK_ERR_MALFORMED);
        expect_body("refuse 4", refuse_4, sizeof refuse_4, MCLINK_OK);
        expect_body("refuse 5", refuse_5, sizeof refuse_5, MCLINK_ERR_MALFORMED);
        expect_body("link error 5", error_5, sizeof error_5, MCLINK_ERR_MALFORMED);
        expect_body("version mismatch without version", error_version_short,
                    sizeof error_version_short, MCLINK_ERR_MALFORMED);
        expect_body("tag 4", tag_4, sizeof tag_4, MCLINK_ERR_UNKNOWN_MESSAGE);
        expect_body("tag 0x80", tag_80, sizeof tag_80, MCLINK_ERR_UNKNOWN_MESSAGE);
        expect_body("tag only", tag_only, sizeof tag_only, MCLINK_ERR_MALFORMED);
        expect_body("no tag", NULL, 0, MCLINK_ERR_TOO_SHORT);

        n = make_frame(0, accept, sizeof accept, frame, sizeof frame);
        frame[4] ^= 0x01; /* a data byte (0x88) */
        CHECK(decode_copy(frame, n, &d) == MCLINK_ERR_CRC, "flipped bit: crc");
        CHECK(d.kind == 0 && d.address == 0, "output zeroed on error");
        frame[0] = 0x00;
        CHECK(decode_copy(frame, n, &d) == MCLINK_ERR_COBS, "zero inside: cobs");
        CHECK(decode_copy(frame, 0, &d) == MCLINK_ERR_TOO_SHORT, "empty frame: too short");
        memset(buf, 0x01, sizeof buf);
        CHECK(decode_copy(buf, MCLINK_MAX_ENCODED_LEN, &d) == MCLINK_ERR_CRC,
              "1029 bytes 01 (1028 zeros): not too long, CRC fails");
        CHECK(decode_copy(buf, MCLINK_MAX_ENCODED_LEN + 1, &d) == MCLINK_ERR_TOO_LONG,
              "1030 bytes: too long");
        CHECK(mclink_decode_downlink(buf, 10, NULL) == MCLINK_ERR_ARGUMENT, "NULL output");
        CHECK(mclink_decode_downlink(NULL, 10, &d) == MCLINK_ERR_ARGUMENT, "NULL frame");
    }

    /* link errors to report, and labels */
    CHECK(mclink_link_error_for(MCLINK_ERR_TOO_LONG) == MCLINK_LINK_ERROR_FRAME_TOO_LONG &&
              mclink_link_error_for(MCLINK_ERR_COBS) == MCLINK_LINK_ERROR_CRC_MISMATCH &&
              mclink_link_error_for(MCLINK_ERR_TOO_SHORT) == MCLINK_LINK_ERROR_CRC_MISMATCH &&
              mclink_link_error_for(MCLINK_ERR_CRC) == MCLINK_LINK_ERROR_CRC_MISMATCH &&
              mclink_link_error_for(MCLINK_ERR_UNKNOWN_MESSAGE) ==
                  MCLINK_LINK_ERROR_UNKNOWN_MESSAGE &&
              mclink_link_error_for(MCLINK_ERR_MALFORMED) == MCLINK_LINK_ERROR_MALFORMED &&
              mclink_link_error_for(MCLINK_ERR_INVALID) == MCLINK_LINK_ERROR_MALFORMED &&
              mclink_link_error_for(MCLINK_OK) == -1,
          "mclink_link_error_for mirrors FrameError::link_error");
    {
        int s, t;
        for (s = MCLINK_OK; s <= MCLINK_ERR_ARGUMENT; s++) {
            for (t = MCLINK_OK; t < s; t++) {
                CHECK(strcmp(mclink_status_str((mclink_status_t)s),
                             mclink_status_str((mclink_status_t)t)) != 0,
                      "status labels %d and %d are the same", s, t);
            }
        }
    }

    { /* encoders refuse what the hub would refuse, and NULLs */
        static const char *const dup[2] = {"temperature", "temperature"};
        static const char *const bad_name[1] = {"1st"};
        static const char *const long_name[1] = {"abcdefghijklmnopqrstuvwxy"};
        static const char *const max_name[1] = {"abcdefghijklmnopqrstuvwx"};
        static const char *const null_name[1] = {NULL};
        static const char *many[33];
        static const char unterminated[40] = {'M', 'C', '-', '1', '0', '0', '1', 'M', 'C', '-',
                                              '1', '0', '0', '1', 'M', 'C', '-', '1', '0', '0',
                                              '1', 'M', 'C', '-', '1', '0', '0', '1', 'M', 'C',
                                              '-', '1', '0', '0', '1', 'M', 'C', '-', '1', '0'};
        static char names_store[33][8];
        const float nan_bits_value[1] = {0.0f};
        float special[1];
        uint32_t bits;
        mclink_hello_t good = {MCLINK_VERSION, "MC-1001-STN", "1.0.0", 5000, 2000, TWO, 2};
        mclink_hello_t h;
        struct {
            const char *what;
            const char *module;
            const char *fw;
        } bad_strings[] = {
            {"id too short", "ab", "1.0"},
            {"id starts with -", "-MC1", "1.0"},
            {"id with /", "MC/1001", "1.0"},
            {"id with space", "MC 1", "1.0"},
            {"id 33 chars", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "1.0"},
            {"fw empty", "MC-1", ""},
            {"fw 17 bytes", "MC-1", "1.0.0-rc1+build.7"},
            {"fw with newline", "MC-1", "1.0\n"},
            {"fw with DEL", "MC-1", "1.0\x7f"},
            {"fw with C1 control U+0085", "MC-1", "1.0\xc2\x85"},
            {"fw invalid UTF-8", "MC-1", "1.0\xff"},
            {"fw truncated UTF-8", "MC-1", "1.0\xc3"},
            {"fw overlong UTF-8", "MC-1", "\xc0\xae"},
            {"fw surrogate", "MC-1", "\xed\xa0\x80"},
        };
        for (i = 0; i < sizeof bad_strings / sizeof bad_strings[0]; i++) {
            h = good;
            h.module = bad_strings[i].module;
            h.fw = bad_strings[i].fw;
            CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT &&
                      n == 0,
                  "hello: %s accepted", bad_strings[i].what);
        }
        h = good;
        h.fw = "1.0.0-\xce\xb1";
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_OK,
              "hello: fw with a Greek alpha refused");
        h.fw = "1.0.0-rc1+build7";
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_OK,
              "hello: fw of 16 bytes refused");
        h = good;
        h.module = unterminated;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: unterminated id accepted");
        h = good;
        h.heartbeat_ms = 99;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: heartbeat 99 accepted");
        h = good;
        h.telemetry_ms = 86400001u;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: telemetry 86400001 accepted");
        h = good;
        h.readings = dup;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: duplicate names accepted");
        h.readings = bad_name;
        h.reading_count = 1;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: name starting with a digit accepted");
        h.readings = long_name;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: 25-character name accepted");
        h.readings = max_name;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_OK,
              "hello: 24-character name refused");
        h.readings = null_name;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: NULL name accepted");
        h.readings = NULL;
        h.reading_count = 0;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_OK,
              "hello: no readings refused");
        for (i = 0; i < 33; i++) {
            sprintf(names_store[i], "r%lu", (unsigned long)i);
            many[i] = names_store[i];
        }
        h.readings = many;
        h.reading_count = 32;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_OK,
              "hello: 32 readings refused");
        h.reading_count = 33;
        CHECK(mclink_uplink_hello(0, &h, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: 33 readings accepted");
        CHECK(mclink_uplink_hello(0, NULL, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: NULL accepted");
        CHECK(mclink_uplink_hello(0, &good, NULL, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "hello: NULL out accepted");

        CHECK(mclink_uplink_telemetry(0, 1, 0x3, nan_bits_value, 1, out, sizeof out, &n) ==
                  MCLINK_ERR_ARGUMENT,
              "telemetry: mask/count mismatch accepted");
        CHECK(mclink_uplink_telemetry(0, 1, 0x1, NULL, 1, out, sizeof out, &n) ==
                  MCLINK_ERR_ARGUMENT,
              "telemetry: NULL values accepted");
        CHECK(mclink_uplink_telemetry(0, 1, 0, NULL, 0, out, sizeof out, &n) == MCLINK_OK,
              "telemetry: empty refused");
        bits = 0x7FC00000u; /* NaN */
        memcpy(&special[0], &bits, 4);
        CHECK(mclink_uplink_telemetry(0, 1, 0x1, special, 1, out, sizeof out, &n) ==
                  MCLINK_ERR_ARGUMENT,
              "telemetry: NaN accepted");
        bits = 0xFF800000u; /* -inf */
        memcpy(&special[0], &bits, 4);
        CHECK(mclink_uplink_telemetry(0, 1, 0x1, special, 1, out, sizeof out, &n) ==
                  MCLINK_ERR_ARGUMENT,
              "telemetry: -inf accepted");
        bits = 0x7F7FFFFFu; /* f32::MAX */
        memcpy(&special[0], &bits, 4);
        CHECK(mclink_uplink_telemetry(0, 1, 0x1, special, 1, out, sizeof out, &n) == MCLINK_OK,
              "telemetry: f32::MAX refused");
        CHECK(mclink_uplink_ack(0, 1, 3, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "ack: result 3 accepted");
        CHECK(mclink_uplink_error(0, 5, 0, out, sizeof out, &n) == MCLINK_ERR_ARGUMENT,
              "error: code 5 accepted");
        CHECK(mclink_uplink_heartbeat(0, 1, 1, out, sizeof out, NULL) == MCLINK_ERR_ARGUMENT,
              "heartbeat: NULL length accepted");
        CHECK(mclink_uplink_heartbeat(0, 0xFFFFFFFFu, (uint64_t)-1, out, sizeof out, &n) ==
                      MCLINK_OK &&
                  n <= 2 + 1 + 1 + 5 + 10 + 2 + 1,
              "heartbeat: largest values");
    }

    { /* accumulator NULLs */
        mclink_accumulator_t acc;
        uint8_t *frame;
        size_t len;
        mclink_accumulator_init(&acc);
        mclink_accumulator_init(NULL);
        CHECK(mclink_accumulator_push(NULL, 1, &frame, &len) == MCLINK_ACC_NONE &&
                  mclink_accumulator_push(&acc, 1, NULL, &len) == MCLINK_ACC_NONE &&
                  mclink_accumulator_push(&acc, 1, &frame, NULL) == MCLINK_ACC_NONE &&
                  !mclink_accumulator_is_mid_frame(&acc) &&
                  !mclink_accumulator_is_mid_frame(NULL),
              "accumulator with NULLs");
        CHECK(mclink_accumulator_push(&acc, 0, &frame, &len) == MCLINK_ACC_NONE &&
                  mclink_accumulator_push(&acc, 0, &frame, &len) == MCLINK_ACC_NONE,
              "empty frames are skipped");
    }
}

/* ---- Robustness ---- */

typedef struct {
    uint8_t wire[64]; /* the line bytes, delimiter included */
    size_t wire_len;
    uint8_t body[64]; /* the raw message (after the address, before the CRC) */
    size_t body_len;
    uint8_t address;
} valid_frame_t;

static valid_frame_t VALID[N_DOWNS];

/* Encodes each expected downlink with a small postcard writer of its own (independent of the
 * library), giving the valid frames the robustness run damages and mutates. */
static void init_valid_frames(void) {
    size_t i;
    for (i = 0; i < N_DOWNS; i++) {
        const mclink_downlink_t *m = &DOWNS[i].msg;
        uint8_t *b = VALID[i].body;
        size_t n = 0;
        b[n++] = (uint8_t)m->kind;
        switch (m->kind) {
        case MCLINK_DOWN_ACCEPT: {
            uint32_t v;
            int k;
            b[n++] = m->as.accept.protocol;
            for (k = 0; k < 2; k++) {
                v = k == 0 ? m->as.accept.heartbeat_ms : m->as.accept.telemetry_ms;
                while (v >= 0x80) {
                    b[n++] = (uint8_t)(v | 0x80);
                    v >>= 7;
                }
                b[n++] = (uint8_t)v;
            }
            break;
        }
        case MCLINK_DOWN_COMMAND: {
            uint32_t v = m->as.command.id;
            while (v >= 0x80) {
                b[n++] = (uint8_t)(v | 0x80);
                v >>= 7;
            }
            b[n++] = (uint8_t)v;
            b[n++] = (uint8_t)m->as.command.action;
            if (m->as.command.action <= MCLINK_ACTION_SET_TELEMETRY_INTERVAL) {
                v = m->as.command.ms;
                while (v >= 0x80) {
                    b[n++] = (uint8_t)(v | 0x80);
                    v >>= 7;
                }
                b[n++] = (uint8_t)v;
            }
            break;
        }
        case MCLINK_DOWN_ERROR:
            b[n++] = (uint8_t)m->as.error.code;
            if (m->as.error.code == MCLINK_LINK_ERROR_VERSION_MISMATCH) {
                b[n++] = m->as.error.supported;
            }
            break;
        case MCLINK_DOWN_REFUSE: b[n++] = (uint8_t)m->as.refuse; break;
        }
        VALID[i].body_len = n;
        VALID[i].address = m->address;
        VALID[i].wire_len =
            make_frame(m->address, b, n, VALID[i].wire, sizeof VALID[i].wire - 1);
        VALID[i].wire[VALID[i].wire_len++] = 0x00;
    }
}

/* What a successful decode must satisfy whatever the input. */
static void check_decoded_sane(const mclink_downlink_t *d, const char *ctx) {
    int ok = 1;
    switch (d->kind) {
    case MCLINK_DOWN_ACCEPT: break;
    case MCLINK_DOWN_COMMAND:
        if ((unsigned)d->as.command.action > MCLINK_ACTION_REBOOT) ok = 0;
        if (d->as.command.action <= MCLINK_ACTION_SET_TELEMETRY_INTERVAL &&
            (d->as.command.ms < MCLINK_INTERVAL_MS_MIN ||
             d->as.command.ms > MCLINK_INTERVAL_MS_MAX)) {
            ok = 0;
        }
        if (d->as.command.action > MCLINK_ACTION_SET_TELEMETRY_INTERVAL && d->as.command.ms != 0)
            ok = 0;
        break;
    case MCLINK_DOWN_ERROR:
        if ((unsigned)d->as.error.code > MCLINK_LINK_ERROR_MALFORMED) ok = 0;
        if (d->as.error.code != MCLINK_LINK_ERROR_VERSION_MISMATCH && d->as.error.supported != 0)
            ok = 0;
        break;
    case MCLINK_DOWN_REFUSE:
        if ((unsigned)d->as.refuse > MCLINK_REFUSE_DUPLICATE) ok = 0;
        break;
    default: ok = 0;
    }
    checks++;
    if (!ok) {
        char s[128];
        FAIL("%s: decoded an impossible message: %s", ctx, show(d, s));
    }
}

typedef struct {
    mclink_accumulator_t acc;
    unsigned long frames, overflows, decoded;
    mclink_downlink_t last;
    mclink_status_t last_status;
    size_t last_discarded;
} stream_t;

static void stream_feed(stream_t *s, const uint8_t *bytes, size_t n, const char *ctx) {
    size_t i;
    for (i = 0; i < n; i++) {
        uint8_t *frame = NULL;
        size_t len = 0;
        mclink_acc_t got = mclink_accumulator_push(&s->acc, bytes[i], &frame, &len);
        if (got == MCLINK_ACC_FRAME) {
            s->frames++;
            checks++;
            if (frame == NULL || len == 0 || len > MCLINK_MAX_ENCODED_LEN ||
                memchr(frame, 0, len) != NULL) {
                FAIL("%s: accumulator returned a bad frame (len %lu)", ctx, (unsigned long)len);
                continue;
            }
            s->last_status = mclink_decode_downlink(frame, len, &s->last);
            if (s->last_status == MCLINK_OK) {
                s->decoded++;
                check_decoded_sane(&s->last, ctx);
            } else {
                CHECK(mclink_link_error_for(s->last_status) >= 0, "%s: status %d", ctx,
                      (int)s->last_status);
            }
        } else if (got == MCLINK_ACC_OVERFLOW) {
            s->overflows++;
            s->last_status = MCLINK_ERR_TOO_LONG;
            s->last_discarded = len;
            CHECK(len > MCLINK_MAX_ENCODED_LEN && frame == NULL, "%s: overflow of %lu bytes", ctx,
                  (unsigned long)len);
        } else {
            CHECK(got == MCLINK_ACC_NONE, "%s: accumulator returned %d", ctx, (int)got);
        }
    }
}

/* After any garbage: a delimiter, then a valid frame decodes to its message. */
static void check_recovers(stream_t *s, const char *ctx) {
    static const uint8_t flush = 0x00;
    size_t k = rnd_below(N_DOWNS);
    unsigned long before;
    char a[128], b[128];
    stream_feed(s, &flush, 1, ctx);
    before = s->frames;
    stream_feed(s, VALID[k].wire, VALID[k].wire_len, ctx);
    CHECK(s->frames == before + 1 && s->last_status == MCLINK_OK &&
              same_downlink(&s->last, &DOWNS[k].msg),
          "%s: valid frame `%s` after garbage: status %s\n  expected %s\n  actual   %s", ctx,
          DOWNS[k].name, mclink_status_str(s->last_status), show(&DOWNS[k].msg, a),
          show(&s->last, b));
}

static void robustness(unsigned long rounds) {
    static stream_t s;
    static uint8_t garbage[8192];
    unsigned long r;
    unsigned long status_count[MCLINK_ERR_ARGUMENT + 1] = {0};
    memset(&s, 0, sizeof s);
    mclink_accumulator_init(&s.acc);

    for (r = 0; r < rounds; r++) {
        uint32_t mode = rnd_below(10);
        size_t n = 0, i;
        if (mode <= 2) { /* random bytes, zeros included, short */
            n = rnd_below(80);
            for (i = 0; i < n; i++) garbage[i] = (uint8_t)rnd();
            stream_feed(&s, garbage, n, "random bytes");
        } else if (mode <= 5) { /* a valid frame damaged on the line */
            const valid_frame_t *v = &VALID[rnd_below(N_DOWNS)];
            uint32_t edits = 1 + rnd_below(3), e;
            memcpy(garbage, v->wire, v->wire_len);
            n = v->wire_len;
            for (e = 0; e < edits; e++) {
                uint32_t op = rnd_below(4), at = rnd_below((uint32_t)n);
                if (op == 0) {
                    garbage[at] ^= (uint8_t)(1u << rnd_below(8));
                } else if (op == 1 && n > 1) {
                    memmove(garbage + at, garbage + at + 1, n - at - 1);
                    n--;
                } else if (op == 2 && n < 60) {
                    memmove(garbage + at + 1, garbage + at, n - at);
                    garbage[at] = (uint8_t)rnd();
                    n++;
                } else {
                    n = at;
                }
            }
            stream_feed(&s, garbage, n, "damaged frame");
        } else if (mode <= 8) { /* a valid CRC around a mutated message: exercises the parser */
            const valid_frame_t *v = &VALID[rnd_below(N_DOWNS)];
            uint8_t body[64];
            size_t bl = v->body_len;
            uint32_t op = rnd_below(5), at;
            memcpy(body, v->body, bl);
            at = rnd_below((uint32_t)bl);
            if (op == 0) {
                body[at] = (uint8_t)rnd();
            } else if (op == 1) {
                body[at] ^= (uint8_t)(1u << rnd_below(8));
            } else if (op == 2 && bl < 40) {
                body[bl++] = (uint8_t)rnd();
            } else if (op == 3 && bl < 30) { /* a random tail of varint-ish bytes */
                uint32_t extra = 1 + rnd_below(12), e;
                bl = at + 1;
                for (e = 0; e < extra; e++) {
                    body[bl++] = (uint8_t)(rnd_below(3) ? rnd() | 0x80 : rnd());
                }
            } else {
                bl = at;
            }
            n = make_frame((uint8_t)rnd_below(8), body, bl, garbage, sizeof garbage - 1);
            garbage[n++] = 0x00;
            stream_feed(&s, garbage, n, "mutated message");
            if (s.last_status <= MCLINK_ERR_ARGUMENT) status_count[s.last_status]++;
        } else { /* a run of non-zero bytes around the length limit, or far beyond */
            size_t run = rnd_below(4) == 0 ? 1030 + rnd_below(5000)
                                           : MCLINK_MAX_ENCODED_LEN - 2 + rnd_below(5);
            unsigned long overflows = s.overflows, frames = s.frames;
            static const uint8_t delim = 0x00;
            stream_feed(&s, &delim, 1, "long run");
            overflows = s.overflows;
            frames = s.frames;
            for (i = 0; i < run; i++) garbage[i] = (uint8_t)(1 + rnd_below(255));
            stream_feed(&s, garbage, run, "long run");
            CHECK(s.overflows == overflows && s.frames == frames,
                  "long run: reported before its delimiter");
            stream_feed(&s, &delim, 1, "long run");
            if (run > MCLINK_MAX_ENCODED_LEN) {
                CHECK(s.overflows == overflows + 1 && s.frames == frames &&
                          s.last_discarded == run,
                      "long run of %lu: expected one overflow of %lu bytes, got %lu (%lu "
                      "bytes)",
                      (unsigned long)run, (unsigned long)run, s.overflows - overflows,
                      (unsigned long)s.last_discarded);
            } else {
                CHECK(s.overflows == overflows && s.frames == frames + 1,
                      "run of %lu: expected one frame", (unsigned long)run);
            }
        }
        /* and the decoder alone on random lengths, beyond the limit too */
        if (r % 16 == 0) {
            mclink_downlink_t d;
            mclink_status_t st;
            n = rnd_below(2) ? rnd_below(40) : rnd_below(1100);
            for (i = 0; i < n; i++) garbage[i] = (uint8_t)(rnd_below(4) ? 1 + rnd_below(255) : 0);
            st = decode_copy(garbage, n, &d);
            if (st == MCLINK_OK) check_decoded_sane(&d, "decoder alone");
            CHECK(n <= MCLINK_MAX_ENCODED_LEN || st == MCLINK_ERR_TOO_LONG,
                  "decoder alone: %lu bytes gave %s", (unsigned long)n, mclink_status_str(st));
        }
        if (r % 8 == 0) check_recovers(&s, "recovery");
        BAIL_IF_FLOODED();
    }
    check_recovers(&s, "final recovery");

    /* Every outcome of the parser was reached (otherwise the mutations are too tame). */
    {
        int k;
        for (k = MCLINK_OK; k <= MCLINK_ERR_INVALID; k++) {
            if (k == MCLINK_ERR_TOO_LONG || k == MCLINK_ERR_COBS || k == MCLINK_ERR_TOO_SHORT ||
                k == MCLINK_ERR_CRC) {
                continue; /* mutated messages keep a valid frame */
            }
            CHECK(status_count[k] > 0, "mutated messages never gave %s",
                  mclink_status_str((mclink_status_t)k));
        }
    }

    /* COBS round trip and capacities on random data */
    for (r = 0; r < rounds / 20; r++) {
        uint8_t src[600], dst[700];
        size_t n = rnd_below(600), cap, len, dec, i;
        mclink_status_t st;
        for (i = 0; i < n; i++) garbage[i] = src[i] = (uint8_t)(rnd_below(3) ? rnd() : 0);
        cap = rnd_below(2) ? sizeof dst : rnd_below((uint32_t)MCLINK_COBS_MAX_ENCODED_LEN(n) + 2);
        memset(dst, 0xA5, sizeof dst);
        st = mclink_cobs_encode(src, n, dst, cap, &len);
        for (i = cap; i < sizeof dst; i++) {
            if (dst[i] != 0xA5) {
                FAIL("COBS wrote past capacity %lu", (unsigned long)cap);
                break;
            }
        }
        if (st == MCLINK_OK) {
            CHECK(len <= MCLINK_COBS_MAX_ENCODED_LEN(n) && len <= cap &&
                      memchr(dst, 0, len) == NULL,
                  "COBS encoding of %lu bytes", (unsigned long)n);
            CHECK(mclink_cobs_decode(dst, len, &dec) == MCLINK_OK && dec == n &&
                      memcmp(dst, src, n) == 0,
                  "COBS round trip of %lu bytes", (unsigned long)n);
        } else {
            CHECK(st == MCLINK_ERR_OVERFLOW && cap < MCLINK_COBS_MAX_ENCODED_LEN(n) + 1,
                  "COBS refused %lu bytes into %lu", (unsigned long)n, (unsigned long)cap);
        }
        BAIL_IF_FLOODED();
    }

    printf("robustness: %lu rounds, %lu frames (%lu decoded), %lu overflows\n", rounds, s.frames,
           s.decoded, s.overflows);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s VECTOR_FILE [DIFF_FILE]\n", argv[0]);
        return 2;
    }
    init_downs();
    unit_checks();
    check_vector_file(argv[1]);
    if (argc == 3) check_diff_file(argv[2]);
    init_valid_frames();
    robustness(300000);
    if (failures > 0) {
        fprintf(stderr, "%lu of %lu checks FAILED\n", failures, checks);
        return 1;
    }
    printf("all %lu checks passed\n", checks);
    return 0;
}
