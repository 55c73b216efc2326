/*
 * mclink - the module side of the MC serial link, in portable C99.
 *
 * The reference implementation for C firmware (Arduino, ESP-IDF, Zephyr, bare metal) of link
 * protocol version 1, specified in hardware/PROTOCOL.md and defined in Rust in
 * shared/src/link/. Both are tested against the same golden vectors
 * (hardware/vectors/link-v1.txt), byte for byte.
 *
 * Properties:
 *   - C99, two files (mclink.h, mclink.c), no malloc, no global or static mutable state;
 *     only <stdint.h>, <stddef.h>, <string.h> and <stdbool.h>.
 *   - Every function is total: it checks every pointer, length and value, and returns an error
 *     code rather than read or write outside the buffers it was given.
 *   - Encoders write straight into the caller's output buffer (no intermediate frame buffer),
 *     so sending needs no RAM besides that buffer. MCLINK_MAX_WIRE_LEN (1030) fits any message;
 *     the largest possible hello is 869 bytes, a heartbeat at most 21, a telemetry frame at
 *     most 16 + 4 per reading (8 readings: 46 bytes, 32 readings: 145).
 *   - IEEE-754 single-precision `float` is assumed (checked at compile time by size).
 *
 * A frame on the line:
 *
 *   raw     = address (1 byte) | postcard(message) | CRC-16/CCITT-FALSE of address+message (LE)
 *   on line = COBS(raw) | 0x00
 *
 * Usage: a module's main loop, following the conversation of hardware/PROTOCOL.md section 4
 * (`make test` compiles this example, so it stays in step with the API):
 *
 * ---- example.c ----
 * #include "mclink.h"
 *
 * // Provided by the board (Arduino: Serial.read/write, millis; ESP-IDF: uart_read_bytes...).
 * int uart_read_byte(void);                         // -1 when nothing is waiting
 * void uart_write(const uint8_t *bytes, size_t n);  // queue or write all of them
 * uint64_t millis(void);                            // monotonic ms since boot
 * void read_sensors(float values[2]);
 * void reboot(void);
 *
 * static const char *const READINGS[] = {"temperature", "battery"};  // indices 0 and 1
 * static mclink_accumulator_t rx;            // ~1 KiB: static, not on a small task stack
 * static uint8_t tx[128];  // this module's largest frame is its hello: 54 bytes
 * static size_t tx_len;
 * static struct {
 *     bool accepted, have_command;
 *     uint32_t heartbeat_ms, telemetry_ms, hb_seq, tm_seq, command_id, hello_wait;
 *     uint8_t command_result;
 *     uint64_t last_hb, last_tm, last_hello, last_error;
 * } s = {false, false, 5000, 2000, 0, 0, 0, 1000, 0, 0, 0, 0, 0};
 *
 * static void send(mclink_status_t status) {  // status of an encoder that filled tx
 *     if (status == MCLINK_OK) uart_write(tx, tx_len);
 * }
 *
 * static void hello(uint64_t now) {
 *     mclink_hello_t h = {MCLINK_VERSION, "MC-1001-STN", "1.0.0", 0, 0, READINGS, 2};
 *     h.heartbeat_ms = s.heartbeat_ms;
 *     h.telemetry_ms = s.telemetry_ms;
 *     s.last_hello = now;
 *     send(mclink_uplink_hello(MCLINK_ADDRESS_POINT_TO_POINT, &h, tx, sizeof tx, &tx_len));
 * }
 *
 * static void heartbeat(uint64_t now) {
 *     s.last_hb = now;
 *     send(mclink_uplink_heartbeat(0, ++s.hb_seq, now, tx, sizeof tx, &tx_len));
 * }
 *
 * static void telemetry(uint64_t now) {  // all readings (or only those that changed: mask)
 *     float values[2];
 *     s.last_tm = now;
 *     read_sensors(values);
 *     send(mclink_uplink_telemetry(0, ++s.tm_seq, 0x3u, values, 2, tx, sizeof tx, &tx_len));
 * }
 *
 * static void on_command(const mclink_command_t *c, uint64_t now) {
 *     bool again = s.have_command && c->id == s.command_id;
 *     if (!again) {  // a retransmitted id is answered with the same ack, never run twice
 *         s.have_command = true;
 *         s.command_id = c->id;
 *         s.command_result = MCLINK_RESULT_DONE;  // intervals were range-checked by the decoder
 *         if (c->action == MCLINK_ACTION_SET_HEARTBEAT_INTERVAL) s.heartbeat_ms = c->ms;
 *         if (c->action == MCLINK_ACTION_SET_TELEMETRY_INTERVAL) s.telemetry_ms = c->ms;
 *     }
 *     send(mclink_uplink_ack(0, c->id, s.command_result, tx, sizeof tx, &tx_len));
 *     if (again) return;
 *     if (c->action == MCLINK_ACTION_SET_HEARTBEAT_INTERVAL) hello(now);  // announce it
 *     if (c->action == MCLINK_ACTION_RESEND_STATE) telemetry(now);
 *     if (c->action == MCLINK_ACTION_REBOOT) reboot();                   // acked first
 * }
 *
 * static void on_message(const mclink_downlink_t *d, uint64_t now) {
 *     if (d->address != MCLINK_ADDRESS_POINT_TO_POINT) return;  // not ours (bus, broadcast)
 *     switch (d->kind) {
 *     case MCLINK_DOWN_ACCEPT:  // run with the hub's intervals; report at once
 *         s.accepted = true;
 *         s.hello_wait = 1000;
 *         s.heartbeat_ms = d->as.accept.heartbeat_ms;
 *         s.telemetry_ms = d->as.accept.telemetry_ms;
 *         heartbeat(now);
 *         telemetry(now);
 *         break;
 *     case MCLINK_DOWN_REFUSE:  // unknown or disabled id, or the hub restarted: hello again
 *         s.accepted = false;
 *         break;
 *     case MCLINK_DOWN_COMMAND:
 *         if (s.accepted) on_command(&d->as.command, now);
 *         break;
 *     case MCLINK_DOWN_ERROR:   // the hub could not use one of our frames: carry on
 *         break;
 *     }
 * }
 *
 * int main(void) {
 *     static const uint8_t flush = MCLINK_DELIMITER;
 *     mclink_accumulator_init(&rx);
 *     uart_write(&flush, 1);  // ends whatever noise the hub's receiver holds
 *     hello(millis());
 *     for (;;) {
 *         uint64_t now = millis();
 *         int byte;
 *         while ((byte = uart_read_byte()) >= 0) {  // every byte received so far
 *             uint8_t *frame;
 *             size_t len;
 *             mclink_downlink_t d;
 *             mclink_status_t st;
 *             mclink_acc_t got = mclink_accumulator_push(&rx, (uint8_t)byte, &frame, &len);
 *             if (got == MCLINK_ACC_NONE) continue;
 *             st = got == MCLINK_ACC_FRAME ? mclink_decode_downlink(frame, len, &d)
 *                                          : MCLINK_ERR_TOO_LONG;
 *             if (st == MCLINK_OK) {
 *                 on_message(&d, now);
 *             } else if (now - s.last_error >= 1000) {  // report, at most one a second
 *                 s.last_error = now;
 *                 send(mclink_uplink_error(0, (uint8_t)mclink_link_error_for(st), 0, tx,
 *                                          sizeof tx, &tx_len));
 *             }
 *         }
 *         if (!s.accepted) {
 *             if (now - s.last_hello >= s.hello_wait) {  // 1 s, doubling up to 30 s
 *                 hello(now);
 *                 s.hello_wait = s.hello_wait < 15000 ? 2 * s.hello_wait : 30000;
 *             }
 *         } else {
 *             if (now - s.last_hb >= s.heartbeat_ms) heartbeat(now);
 *             if (now - s.last_tm >= s.telemetry_ms) telemetry(now);
 *         }
 *     }
 * }
 * ---- end of example ----
 *
 * Receiving: feed every byte to an accumulator; when it returns a frame, decode it in place
 * with mclink_decode_downlink (the frame pointer points into the accumulator and stays valid
 * until the next push). Sending: an mclink_uplink_* encoder fills a buffer with the complete
 * bytes for the line (COBS frame and its 0x00 delimiter); write them as they are.
 */
#ifndef MCLINK_H
#define MCLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Constants (equal to the Rust ones in shared/src/link/ and shared/src/message.rs) ---- */

/** The link protocol version this implementation speaks (LINK_VERSION). */
#define MCLINK_VERSION 1u
/** Longest raw frame (address + message + CRC) either side sends or accepts. */
#define MCLINK_MAX_FRAME_LEN 1024u
/** Longest COBS-encoded frame, delimiter excluded (1029): longer runs are discarded. */
#define MCLINK_MAX_ENCODED_LEN (MCLINK_MAX_FRAME_LEN + MCLINK_MAX_FRAME_LEN / 254u + 1u)
/** Size of a buffer that holds any encoded frame with its delimiter (1030). */
#define MCLINK_MAX_WIRE_LEN (MCLINK_MAX_ENCODED_LEN + 1u)
/** The frame delimiter. */
#define MCLINK_DELIMITER 0x00u
/** Address of a module alone on its line (UART, USB CDC): the only one the hub uses today. */
#define MCLINK_ADDRESS_POINT_TO_POINT 0u
/** Highest RS-485 multidrop address (1..=247; 248..=254 reserved). */
#define MCLINK_ADDRESS_MAX 247u
/** Hub to every module on a bus; no module answers a broadcast. */
#define MCLINK_ADDRESS_BROADCAST 0xFFu
/** Most readings a module declares in its hello (and so per telemetry frame). */
#define MCLINK_MAX_READINGS 32u
/** Module ids: 3 to 32 characters from A-Z a-z 0-9 - _, the first a letter or digit. */
#define MCLINK_MODULE_ID_MIN_LEN 3u
#define MCLINK_MODULE_ID_MAX_LEN 32u
/** Firmware versions: 1 to 16 bytes of UTF-8 without control characters. */
#define MCLINK_FIRMWARE_VERSION_MAX_LEN 16u
/** Reading names: 1 to 24 characters from a-z A-Z 0-9 _ . -, the first a letter. */
#define MCLINK_READING_NAME_MAX_LEN 24u
/** Heartbeat and telemetry intervals: 100 ms to 24 h, inclusive. */
#define MCLINK_INTERVAL_MS_MIN 100u
#define MCLINK_INTERVAL_MS_MAX 86400000u

/* ---- Status codes ---- */

/**
 * What a function returns. The frame errors mirror Rust's FrameError one for one; pass them to
 * mclink_link_error_for() to get the link error to report to the hub.
 */
typedef enum {
    MCLINK_OK = 0,
    /** More than MCLINK_MAX_ENCODED_LEN bytes without a delimiter (FrameError::TooLong). */
    MCLINK_ERR_TOO_LONG = 1,
    /** Not valid COBS: damaged on the line (FrameError::Cobs). */
    MCLINK_ERR_COBS = 2,
    /** Too short for an address, a message tag and a CRC (FrameError::TooShort). */
    MCLINK_ERR_TOO_SHORT = 3,
    /** The CRC does not match (FrameError::Crc). */
    MCLINK_ERR_CRC = 4,
    /** A message tag this side does not know, e.g. from a newer hub (UnknownMessage). */
    MCLINK_ERR_UNKNOWN_MESSAGE = 5,
    /** Intact frame, undecodable content: truncated, wrong values, trailing bytes (Malformed). */
    MCLINK_ERR_MALFORMED = 6,
    /** Decoded, but breaks a rule: a command's interval out of range (FrameError::Invalid). */
    MCLINK_ERR_INVALID = 7,
    /** Encoding: the output buffer is too small, or the message exceeds MCLINK_MAX_FRAME_LEN. */
    MCLINK_ERR_OVERFLOW = 8,
    /** A NULL pointer, or a value the hub would refuse (bad id, interval out of range, NaN...). */
    MCLINK_ERR_ARGUMENT = 9
} mclink_status_t;

/** A short stable label for logs ("ok", "crc_mismatch", ...; the Rust reasons for frame errors). */
const char *mclink_status_str(mclink_status_t status);

/* ---- Enumerations of the protocol (their values are the wire format) ---- */

/** Link-level errors (LinkError), reported by whichever side received a bad frame. */
typedef enum {
    MCLINK_LINK_ERROR_FRAME_TOO_LONG = 0,
    MCLINK_LINK_ERROR_CRC_MISMATCH = 1,
    MCLINK_LINK_ERROR_UNKNOWN_MESSAGE = 2,
    /** The peer speaks another protocol version; `supported` carries the sender's version. */
    MCLINK_LINK_ERROR_VERSION_MISMATCH = 3,
    MCLINK_LINK_ERROR_MALFORMED = 4
} mclink_link_error_code_t;

/**
 * The link error to report for a receive-side status (FrameError::link_error): too long ->
 * FRAME_TOO_LONG; cobs, too short, crc -> CRC_MISMATCH; unknown message -> UNKNOWN_MESSAGE;
 * malformed, invalid -> MALFORMED. -1 for MCLINK_OK and MCLINK_ERR_ARGUMENT (nothing to report);
 * MCLINK_ERR_OVERFLOW maps to FRAME_TOO_LONG.
 */
int mclink_link_error_for(mclink_status_t status);

/** What came of a command (CommandResult), the `result` of an ack. */
typedef enum {
    MCLINK_RESULT_DONE = 0,             /**< done (for a reboot: about to reboot) */
    MCLINK_RESULT_INVALID_ARGUMENT = 1, /**< an argument is out of the module's range */
    MCLINK_RESULT_UNSUPPORTED = 2       /**< the module does not implement this action */
} mclink_command_result_t;

/** What a command asks for (CommandAction). */
typedef enum {
    MCLINK_ACTION_SET_HEARTBEAT_INTERVAL = 0, /**< `ms`: new heartbeat interval; hello again */
    MCLINK_ACTION_SET_TELEMETRY_INTERVAL = 1, /**< `ms`: new telemetry interval */
    MCLINK_ACTION_RESEND_STATE = 2,           /**< send every reading again, changed or not */
    MCLINK_ACTION_REBOOT = 3                  /**< ack, then restart */
} mclink_action_t;

/** Why the hub refuses a module (RefuseReason). After a refusal, say hello again later. */
typedef enum {
    MCLINK_REFUSE_UNKNOWN_MODULE = 0,     /**< not registered (listed as pending for an admin) */
    MCLINK_REFUSE_DISABLED = 1,           /**< registered but disabled */
    MCLINK_REFUSE_HANDSHAKE_REQUIRED = 2, /**< traffic without an accepted hello */
    MCLINK_REFUSE_INVALID_HELLO = 3,      /**< the hello breaks a rule */
    MCLINK_REFUSE_DUPLICATE = 4           /**< another link already carries this module id */
} mclink_refuse_reason_t;

/* ---- CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) ---- */

/** The CRC of nothing, where an incremental computation starts. */
#define MCLINK_CRC_INIT 0xFFFFu

/** Continues a CRC over `len` bytes (NULL with any length counts as no bytes). */
uint16_t mclink_crc16_update(uint16_t crc, const uint8_t *data, size_t len);
/** CRC-16/CCITT-FALSE of `len` bytes; "123456789" gives 0x29B1. */
uint16_t mclink_crc16(const uint8_t *data, size_t len);

/* ---- COBS ---- */

/** Longest COBS encoding of `len` bytes, delimiter excluded. */
#define MCLINK_COBS_MAX_ENCODED_LEN(len) ((len) + (len) / 254u + 1u)

/**
 * COBS-encodes `src_len` bytes into `dst` (capacity `dst_cap`); the 0x00 delimiter is not
 * written. Stores the encoded length in `*dst_len`. MCLINK_ERR_OVERFLOW when `dst` is too small
 * (bytes up to `dst_cap` may have been written), MCLINK_ERR_ARGUMENT for NULL pointers.
 * `src` and `dst` must not overlap.
 */
mclink_status_t mclink_cobs_encode(const uint8_t *src, size_t src_len, uint8_t *dst,
                                   size_t dst_cap, size_t *dst_len);

/**
 * Decodes a COBS block (without its delimiter) in place, storing the decoded length in
 * `*out_len`. MCLINK_ERR_COBS when it is not valid COBS (a 0x00 inside, or a code pointing past
 * the end); the buffer's content is then unspecified.
 */
mclink_status_t mclink_cobs_decode(uint8_t *buf, size_t len, size_t *out_len);

/* ---- Receiving: the stream accumulator ---- */

/**
 * Cuts a byte stream into frames at each 0x00, whatever the reads' sizes. Bytes beyond
 * MCLINK_MAX_ENCODED_LEN without a delimiter are discarded up to the next delimiter and
 * reported once; empty frames (0x00 0x00) are skipped. One per link; about 1 KiB. Treat the
 * fields as private.
 */
typedef struct {
    uint8_t buf[MCLINK_MAX_ENCODED_LEN];
    size_t len;       /* bytes of the current frame in buf */
    size_t discarded; /* bytes dropped since the current frame overflowed; 0 when not */
} mclink_accumulator_t;

/** What mclink_accumulator_push() found. */
typedef enum {
    MCLINK_ACC_NONE = 0,    /**< nothing yet (or an empty frame was skipped) */
    MCLINK_ACC_FRAME = 1,   /**< a complete frame: `*frame`, `*len` (delimiter excluded) */
    MCLINK_ACC_OVERFLOW = 2 /**< a too-long run ended; `*len` = bytes discarded */
} mclink_acc_t;

/** Empties an accumulator (also: after the port closed mid-frame). NULL is ignored. */
void mclink_accumulator_init(mclink_accumulator_t *acc);

/**
 * Takes one received byte. On MCLINK_ACC_FRAME, `*frame` points into the accumulator and
 * `*len` is the frame's length: decode it with mclink_decode_downlink() before the next push.
 * On MCLINK_ACC_OVERFLOW, `*len` is the number of bytes discarded (saturating) and `*frame` is
 * NULL: report MCLINK_LINK_ERROR_FRAME_TOO_LONG. Returns MCLINK_ACC_NONE and does nothing when
 * a pointer is NULL.
 */
mclink_acc_t mclink_accumulator_push(mclink_accumulator_t *acc, uint8_t byte, uint8_t **frame,
                                     size_t *len);

/** True while bytes of an unfinished frame wait for their delimiter. */
bool mclink_accumulator_is_mid_frame(const mclink_accumulator_t *acc);

/* ---- Receiving: hub -> module messages (Downlink) ---- */

/** Which Downlink message; the values are the wire tags. */
typedef enum {
    MCLINK_DOWN_ACCEPT = 0,  /**< the hello is accepted: run with these settings */
    MCLINK_DOWN_COMMAND = 1, /**< do something, then ack with the same id */
    MCLINK_DOWN_ERROR = 2,   /**< a frame from the module could not be used */
    MCLINK_DOWN_REFUSE = 3   /**< not (or no longer) accepted: hello again later */
} mclink_down_kind_t;

/** Accept: the hub's answer to a hello. */
typedef struct {
    uint8_t protocol;      /**< the hub's protocol version */
    uint32_t heartbeat_ms; /**< heartbeat interval the hub wants (usually the module's own) */
    uint32_t telemetry_ms; /**< telemetry interval the hub wants (usually the module's own) */
} mclink_accept_t;

/** Command: answer with mclink_uplink_ack(id, result). */
typedef struct {
    uint32_t id;            /**< chosen by the hub; echo it in the ack */
    mclink_action_t action; /**< what to do */
    uint32_t ms;            /**< the new interval for SET_*_INTERVAL (in range); 0 otherwise */
} mclink_command_t;

/** A link error report. */
typedef struct {
    mclink_link_error_code_t code;
    uint8_t supported; /**< the sender's version, for VERSION_MISMATCH; 0 otherwise */
} mclink_link_error_t;

/** A decoded hub -> module frame. */
typedef struct {
    uint8_t address; /**< destination: 0 point to point; on a bus, ignore other addresses */
    mclink_down_kind_t kind;
    union {
        mclink_accept_t accept;
        mclink_command_t command;
        mclink_link_error_t error;
        mclink_refuse_reason_t refuse;
    } as; /**< the member named by `kind` */
} mclink_downlink_t;

/**
 * Decodes a hub -> module frame (the bytes between two delimiters, as the accumulator returns
 * them) in place: undoes COBS, checks length, CRC, message tag, every field, that no byte is
 * left over, and a command's interval range. On success fills `*out`; on error `*out` is zeroed
 * and the status says why (see mclink_status_t and mclink_link_error_for()). The frame's bytes
 * are overwritten either way.
 */
mclink_status_t mclink_decode_downlink(uint8_t *frame, size_t len, mclink_downlink_t *out);

/* ---- Sending: module -> hub messages (Uplink) ----
 *
 * Each encoder writes the complete bytes for the line (COBS frame and 0x00 delimiter) into
 * `out` (capacity `out_cap`; MCLINK_MAX_WIRE_LEN always suffices) and stores their count in
 * `*out_len`. `address` is MCLINK_ADDRESS_POINT_TO_POINT except on a bus. Errors:
 * MCLINK_ERR_ARGUMENT for NULL pointers or values the hub would refuse (nothing is written),
 * MCLINK_ERR_OVERFLOW when `out` is too small (bytes up to `out_cap` may have been written, never
 * beyond). `*out_len` is 0 on error.
 */

/** The handshake, sent when the link comes up, after a refusal, and until accepted. */
typedef struct {
    uint8_t protocol;             /**< MCLINK_VERSION */
    const char *module;           /**< module id, NUL-terminated; registered in the hub */
    const char *fw;               /**< firmware version, NUL-terminated */
    uint32_t heartbeat_ms;        /**< heartbeat interval, MCLINK_INTERVAL_MS_MIN..MAX */
    uint32_t telemetry_ms;        /**< telemetry interval, MCLINK_INTERVAL_MS_MIN..MAX */
    const char *const *readings;  /**< reading names, NUL-terminated, unique; telemetry refers */
    size_t reading_count;         /**< to them by index. At most MCLINK_MAX_READINGS; may be 0 */
} mclink_hello_t;

/**
 * Hello. Checks what the hub checks: the module id, firmware version and reading name rules
 * (strings are read up to their limit + 1, so an unterminated string is refused, not overrun),
 * the interval ranges, unique names, at most 32 readings.
 */
mclink_status_t mclink_uplink_hello(uint8_t address, const mclink_hello_t *hello, uint8_t *out,
                                    size_t out_cap, size_t *out_len);

/** Heartbeat: `seq` increments per heartbeat (wrapping); `uptime_ms` since boot. */
mclink_status_t mclink_uplink_heartbeat(uint8_t address, uint32_t seq, uint64_t uptime_ms,
                                        uint8_t *out, size_t out_cap, size_t *out_len);

/**
 * Telemetry by reading index: bit i of `mask` says reading i of the hello's list is present;
 * `values` holds the present ones, lowest index first (`count` = bits set in `mask`, every
 * value finite). Send all readings, or only those that changed. `values` may be NULL when
 * `count` is 0.
 */
mclink_status_t mclink_uplink_telemetry(uint8_t address, uint32_t seq, uint32_t mask,
                                        const float *values, size_t count, uint8_t *out,
                                        size_t out_cap, size_t *out_len);

/** Ack of command `command` (its id) with a mclink_command_result_t. */
mclink_status_t mclink_uplink_ack(uint8_t address, uint32_t command, uint8_t result,
                                  uint8_t *out, size_t out_cap, size_t *out_len);

/**
 * A link error report (a mclink_link_error_code_t). `supported` (this module's version,
 * MCLINK_VERSION) is sent only with MCLINK_LINK_ERROR_VERSION_MISMATCH and ignored otherwise.
 */
mclink_status_t mclink_uplink_error(uint8_t address, uint8_t code, uint8_t supported,
                                    uint8_t *out, size_t out_cap, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif /* MCLINK_H */
