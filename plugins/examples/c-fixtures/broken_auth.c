/*
 * broken_auth.c - test fixture: an auth plugin that can be built broken in
 * one chosen way, to check that the host refuses it with the documented
 * error (tests/plugins.rs builds it several times with different -D flags).
 *
 *   -DENTRY=name          entry symbol (default pop3d_plugin_broken_auth)
 *   -DFIX_MAGIC=n         header magic (default POP3D_PLUGIN_MAGIC)
 *   -DFIX_MAJOR=n         ABI major (default POP3D_ABI_MAJOR)
 *   -DFIX_MINOR=n         ABI minor (default POP3D_ABI_MINOR)
 *   -DFIX_TABLE_SIZE=n    table size field (default: the real size)
 *   -DNULL_AUTHENTICATE   leave the required authenticate pointer NULL
 *   -DREFUSE_HOST         entry returns NULL
 *   -DFUTURE_TABLE        append a function after get_secret, as a newer
 *                         minor version would, and report the longer size
 *
 * When it works, it accepts any user whose password equals the user name,
 * and get_secret reveals the user name as the secret.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stddef.h>
#include <stdint.h>

#include "pop3d_plugin.h"

#ifndef ENTRY
#define ENTRY pop3d_plugin_broken_auth
#endif
#ifndef FIX_MAGIC
#define FIX_MAGIC POP3D_PLUGIN_MAGIC
#endif
#ifndef FIX_MAJOR
#define FIX_MAJOR POP3D_ABI_MAJOR
#endif
#ifndef FIX_MINOR
#define FIX_MINOR POP3D_ABI_MINOR
#endif

static int g_token;

static Pop3dStatus fx_create(const uint8_t *config, uint64_t config_len, Pop3dBuf *err,
                             void **out_instance) {
    (void)config;
    (void)config_len;
    (void)err;
    *out_instance = &g_token;
    return POP3D_OK;
}

static void fx_destroy(void *instance) { (void)instance; }

static int same(const uint8_t *a, uint64_t a_len, const uint8_t *b, uint64_t b_len) {
    if (a_len != b_len) return 0;
    for (uint64_t k = 0; k < a_len; k++)
        if (a[k] != b[k]) return 0;
    return 1;
}

static Pop3dStatus fx_authenticate(void *instance, const uint8_t *user, uint64_t user_len,
                                   const uint8_t *password, uint64_t password_len,
                                   Pop3dUserOut *out, Pop3dBuf *err) {
    (void)instance;
    (void)err;
    (void)out;
    return same(user, user_len, password, password_len) ? POP3D_OK : POP3D_DENIED;
}

static Pop3dStatus fx_get_secret(void *instance, const uint8_t *user, uint64_t user_len,
                                 Pop3dBuf *secret, Pop3dUserOut *out, Pop3dBuf *err) {
    (void)instance;
    (void)out;
    (void)err;
    return secret->append(secret, user, user_len);
}

#ifdef FUTURE_TABLE
static void fx_future(void) {}
static const struct {
    Pop3dAuthTable base;
    void (*future_optional)(void);
} TABLE = {
    .base =
        {
            .size = sizeof(Pop3dAuthTable) + sizeof(void (*)(void)),
            .create = fx_create,
            .destroy = fx_destroy,
            .authenticate = fx_authenticate,
            .get_secret = fx_get_secret,
        },
    .future_optional = fx_future,
};
#else
static const Pop3dAuthTable TABLE = {
#ifdef FIX_TABLE_SIZE
    .size = FIX_TABLE_SIZE,
#else
    .size = sizeof(Pop3dAuthTable),
#endif
    .create = fx_create,
    .destroy = fx_destroy,
#ifdef NULL_AUTHENTICATE
    .authenticate = NULL,
    /* fx_authenticate stays referenced through fx_keep below. */
#else
    .authenticate = fx_authenticate,
#endif
    .get_secret = fx_get_secret,
};
#endif

#ifdef NULL_AUTHENTICATE
/* Keeps -Werror quiet about the function the broken table leaves out. */
const void *fx_keep(void);
const void *fx_keep(void) { return (const void *)(uintptr_t)fx_authenticate; }
#endif

static const Pop3dPluginHeader HEADER = {
    .magic = FIX_MAGIC,
    .abi_major = FIX_MAJOR,
    .abi_minor = FIX_MINOR,
    .header_size = sizeof(Pop3dPluginHeader),
    .kind = POP3D_KIND_AUTH,
    .flags = POP3D_FLAG_THREAD_SAFE,
    .name = "broken-auth",
    .table = &TABLE,
};

const Pop3dPluginHeader *ENTRY(const Pop3dHost *host) {
    (void)host;
#ifdef REFUSE_HOST
    (void)HEADER;
    return NULL;
#else
    return &HEADER;
#endif
}
