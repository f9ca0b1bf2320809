/*
 * pop3d_plugin.h - the C ABI between pop3d and its auth and store plugins.
 *
 * This header and plugins/api/src/abi.rs describe the same ABI. A test
 * (tests/plugins.rs) compiles C files against this header, loads them, and
 * compares every struct size and field offset with the Rust definitions, so
 * the two cannot drift apart unnoticed. The plugin guide is
 * plugins/README.md.
 *
 * Rules of the boundary, in short:
 *  - Only fixed-width integers, pointers and these structs cross it.
 *  - Inputs (pointer + length pairs, Pop3dUser) are borrowed for one call.
 *    Outputs go into memory the host owns: small values through the host's
 *    append callbacks, message bytes into the caller's buffer given to read.
 *  - Whoever allocates frees. Handles (instance, maildrop, reader) are
 *    opaque to the host and come back to the plugin's destroy,
 *    commit/release and close_reader exactly once.
 *  - Functions return a Pop3dStatus; unknown values count as TEMP_FAIL.
 *  - Text is UTF-8 and not NUL-terminated unless a field says so.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef POP3D_PLUGIN_H
#define POP3D_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "POP3" read as a big-endian number: the first field of every header. */
#define POP3D_PLUGIN_MAGIC 0x504F5033u
/* Host and plugin must agree exactly on the major version. */
#define POP3D_ABI_MAJOR 1
/* Minor versions only append optional functions and fields. */
#define POP3D_ABI_MINOR 0

/* Status codes. */
typedef int32_t Pop3dStatus;
#define POP3D_OK 0
#define POP3D_DENIED 1    /* wrong password or unknown user, never told apart */
#define POP3D_NOT_FOUND 2 /* the user (get_secret) or message does not exist */
#define POP3D_IN_USE 3    /* the maildrop is held elsewhere */
#define POP3D_TEMP_FAIL 4 /* may work later */
#define POP3D_PERM_FAIL 5 /* needs an operator */
#define POP3D_PANICKED 6  /* internal failure; the host stops using the instance */

/* Pop3dPluginHeader.kind */
#define POP3D_KIND_AUTH 1u
#define POP3D_KIND_STORE 2u

/* Pop3dPluginHeader.flags: the instance may be called from many threads at
 * once. Without it the host serializes all calls into the instance and into
 * the maildrops and readers made from it. */
#define POP3D_FLAG_THREAD_SAFE 1u

/* Log levels for Pop3dHost.log. */
#define POP3D_LOG_ERROR 1u
#define POP3D_LOG_WARN 2u
#define POP3D_LOG_INFO 3u
#define POP3D_LOG_DEBUG 4u
#define POP3D_LOG_TRACE 5u

/* What the host passes to the entry function. Valid for the rest of the
 * process: a plugin may keep the pointer. */
typedef struct Pop3dHost {
    uint32_t size;      /* sizeof(Pop3dHost) as the host was built */
    uint16_t abi_major; /* the host's ABI version */
    uint16_t abi_minor;
    void *host_data; /* opaque: tells the host which plugin is logging */
    /* Writes one line (UTF-8, no newline, borrowed) into the host's log. */
    void (*log)(const struct Pop3dHost *host, uint32_t level, const uint8_t *message, uint64_t len);
} Pop3dHost;

/* A host-owned output buffer: error text (capped, excess dropped) and
 * secrets. */
typedef struct Pop3dBuf {
    void *host; /* opaque */
    /* Appends len bytes. POP3D_OK, or POP3D_PERM_FAIL when the host refuses
     * more. */
    Pop3dStatus (*append)(struct Pop3dBuf *buf, const uint8_t *data, uint64_t len);
} Pop3dBuf;

/* A borrowed byte string. */
typedef struct Pop3dStr {
    const uint8_t *ptr;
    uint64_t len;
} Pop3dStr;

/* One key=value user attribute. */
typedef struct Pop3dKeyValue {
    Pop3dStr key;
    Pop3dStr value;
} Pop3dKeyValue;

/* What authentication learned about a user, lent to a store's open. */
typedef struct Pop3dUser {
    Pop3dStr name;              /* canonical user name */
    Pop3dStr home;              /* home.ptr == NULL: no home directory */
    const Pop3dKeyValue *extra; /* extra_count attributes */
    uint64_t extra_count;
} Pop3dUser;

/* Host-owned receiver for an auth plugin's results. Unset name means the
 * name the client typed; unset home means none. Each returns POP3D_OK or
 * POP3D_PERM_FAIL (not UTF-8, or over the host's size limit). */
typedef struct Pop3dUserOut {
    void *host; /* opaque */
    Pop3dStatus (*set_name)(struct Pop3dUserOut *out, const uint8_t *value, uint64_t len);
    Pop3dStatus (*set_home)(struct Pop3dUserOut *out, const uint8_t *value, uint64_t len);
    Pop3dStatus (*add_extra)(struct Pop3dUserOut *out, const uint8_t *key, uint64_t key_len,
                             const uint8_t *value, uint64_t value_len);
} Pop3dUserOut;

/* Host-owned receiver for a maildrop listing: one call per message, in
 * message-number order. Returns POP3D_PERM_FAIL for an invalid or repeated
 * uid (1..70 bytes of 0x21..0x7E); stop and return that status then. */
typedef struct Pop3dListSink {
    void *host; /* opaque */
    Pop3dStatus (*message)(struct Pop3dListSink *sink, uint64_t wire_size, const uint8_t *uid,
                           uint64_t uid_len);
} Pop3dListSink;

/* Functions of an auth plugin. Append-only; `size` is sizeof as built. */
typedef struct Pop3dAuthTable {
    uint64_t size;
    /* Parses the RON config text (borrowed, not NUL-terminated) and makes an
     * instance. On failure, explain in err. */
    Pop3dStatus (*create)(const uint8_t *config, uint64_t config_len, Pop3dBuf *err,
                          void **out_instance);
    /* Frees an instance. */
    void (*destroy)(void *instance);
    /* Checks a password. DENIED for wrong password and unknown user alike,
     * after the same work. On OK, fills out. */
    Pop3dStatus (*authenticate)(void *instance, const uint8_t *user, uint64_t user_len,
                                const uint8_t *password, uint64_t password_len, Pop3dUserOut *out,
                                Pop3dBuf *err);
    /* OPTIONAL (may be NULL, or beyond `size`): appends the user's shared
     * secret to `secret` as a Dovecot-style {SCHEME}data string
     * ("{PLAIN}password", "{CRAM-MD5}hex", "{SCRAM-SHA-256}iter,salt,
     * StoredKey,ServerKey") and fills out, for APOP, CRAM-MD5 and SCRAM. */
    Pop3dStatus (*get_secret)(void *instance, const uint8_t *user, uint64_t user_len,
                              Pop3dBuf *secret, Pop3dUserOut *out, Pop3dBuf *err);
} Pop3dAuthTable;

/* Functions of a store plugin. Append-only; all are required. */
typedef struct Pop3dStoreTable {
    uint64_t size;
    Pop3dStatus (*create)(const uint8_t *config, uint64_t config_len, Pop3dBuf *err,
                          void **out_instance);
    /* Called once, after every maildrop and reader of the instance was
     * closed. */
    void (*destroy)(void *instance);
    /* Locks the user's maildrop and takes a snapshot. IN_USE when held. */
    Pop3dStatus (*open)(void *instance, const Pop3dUser *user, Pop3dBuf *err,
                        void **out_maildrop);
    /* Reports the snapshot through sink; called once after open. */
    Pop3dStatus (*list)(void *maildrop, Pop3dListSink *sink, Pop3dBuf *err);
    /* Opens message `index` (0-based) for reading. */
    Pop3dStatus (*open_message)(void *maildrop, uint64_t index, Pop3dBuf *err, void **out_reader);
    /* Writes up to cap raw bytes into the host's buf, sets *out_len;
     * *out_len == 0 means the end of the message. */
    Pop3dStatus (*read)(void *reader, uint8_t *buf, uint64_t cap, uint64_t *out_len, Pop3dBuf *err);
    /* Frees a reader. May come after its maildrop was committed or released. */
    void (*close_reader)(void *reader);
    /* Deletes the messages at the 0-based indices (sorted, unique), then
     * releases and frees the maildrop, whatever the status. */
    Pop3dStatus (*commit)(void *maildrop, const uint64_t *indices, uint64_t count, Pop3dBuf *err);
    /* Releases and frees the maildrop, deleting nothing. */
    void (*release)(void *maildrop);
} Pop3dStoreTable;

/* The static description a plugin returns from its entry function. */
typedef struct Pop3dPluginHeader {
    uint32_t magic; /* POP3D_PLUGIN_MAGIC */
    uint16_t abi_major; /* POP3D_ABI_MAJOR as the plugin was built */
    uint16_t abi_minor; /* POP3D_ABI_MINOR as the plugin was built */
    uint32_t header_size; /* sizeof(Pop3dPluginHeader) */
    uint32_t kind;        /* POP3D_KIND_AUTH or POP3D_KIND_STORE */
    uint64_t flags;       /* POP3D_FLAG_* */
    const char *name;     /* NUL-terminated, static */
    const void *table;    /* Pop3dAuthTable or Pop3dStoreTable, static */
} Pop3dPluginHeader;

/* The entry function: export it as pop3d_plugin_<name> (the library's file
 * name without "lib" and extensions, '-' written as '_'), or as
 * pop3d_plugin_entry. Return the static header, or NULL to refuse this host
 * (for example when host->abi_minor is too old for you). May be called
 * more than once. */
typedef const Pop3dPluginHeader *(*Pop3dEntryFn)(const Pop3dHost *host);

/* Layout checks: the Rust side of the ABI has exactly these sizes and
 * offsets on 64-bit targets. If one fails, this header drifted from
 * plugins/api/src/abi.rs. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__cplusplus)
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
#define POP3D_LAYOUT_CHECK(cond, what) _Static_assert(cond, "pop3d_plugin.h layout drift: " what)
POP3D_LAYOUT_CHECK(sizeof(Pop3dHost) == 24, "Pop3dHost");
POP3D_LAYOUT_CHECK(offsetof(Pop3dHost, host_data) == 8, "Pop3dHost.host_data");
POP3D_LAYOUT_CHECK(offsetof(Pop3dHost, log) == 16, "Pop3dHost.log");
POP3D_LAYOUT_CHECK(sizeof(Pop3dBuf) == 16, "Pop3dBuf");
POP3D_LAYOUT_CHECK(sizeof(Pop3dStr) == 16, "Pop3dStr");
POP3D_LAYOUT_CHECK(sizeof(Pop3dKeyValue) == 32, "Pop3dKeyValue");
POP3D_LAYOUT_CHECK(sizeof(Pop3dUser) == 48, "Pop3dUser");
POP3D_LAYOUT_CHECK(offsetof(Pop3dUser, extra_count) == 40, "Pop3dUser.extra_count");
POP3D_LAYOUT_CHECK(sizeof(Pop3dUserOut) == 32, "Pop3dUserOut");
POP3D_LAYOUT_CHECK(sizeof(Pop3dListSink) == 16, "Pop3dListSink");
POP3D_LAYOUT_CHECK(sizeof(Pop3dAuthTable) == 40, "Pop3dAuthTable");
POP3D_LAYOUT_CHECK(offsetof(Pop3dAuthTable, get_secret) == 32, "Pop3dAuthTable.get_secret");
POP3D_LAYOUT_CHECK(sizeof(Pop3dStoreTable) == 80, "Pop3dStoreTable");
POP3D_LAYOUT_CHECK(offsetof(Pop3dStoreTable, release) == 72, "Pop3dStoreTable.release");
POP3D_LAYOUT_CHECK(sizeof(Pop3dPluginHeader) == 40, "Pop3dPluginHeader");
POP3D_LAYOUT_CHECK(offsetof(Pop3dPluginHeader, flags) == 16, "Pop3dPluginHeader.flags");
POP3D_LAYOUT_CHECK(offsetof(Pop3dPluginHeader, table) == 32, "Pop3dPluginHeader.table");
#undef POP3D_LAYOUT_CHECK
#endif
#endif

#ifdef __cplusplus
}
#endif

#endif /* POP3D_PLUGIN_H */
