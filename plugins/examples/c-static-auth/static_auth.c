/*
 * static_auth.c - example pop3d auth plugin in C: users from a static table.
 *
 * Build:  cc -std=c11 -Wall -Wextra -O2 -shared -fPIC \
 *            -I ../../api/include -o libstatic_auth.so static_auth.c
 * Config: auth: (plugin: "/path/to/libstatic_auth.so", config: ())
 *
 * Users (name / password): alice / wonderland, bob / builder. Names match
 * case-insensitively; the canonical (table) spelling is what the store
 * sees. The passwords are plaintext, so the plugin can also serve
 * get_secret for APOP and CRAM-MD5.
 *
 * The plugin counts failed logins in a plain global variable and reports the
 * count as the extra attribute "failed_logins" on every successful login.
 * That counter is not safe to update from several threads at once, which is
 * why this plugin does NOT set POP3D_FLAG_THREAD_SAFE: the host then
 * serializes every call into it.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pop3d_plugin.h"

struct user {
    const char *name;
    const char *password;
    const char *home; /* NULL: no home directory */
};

static const struct user USERS[] = {
    {"alice", "wonderland", "/home/alice"},
    {"bob", "builder", NULL},
};
#define USER_COUNT (sizeof USERS / sizeof USERS[0])

/* Kept for logging; valid for the life of the process. */
static const Pop3dHost *g_host;
/* Not atomic on purpose; see the file comment. */
static uint64_t g_failed_logins;

/* The plugin has no per-instance state; the instance is a token. */
static int g_instance_token;

static void log_line(uint32_t level, const char *text) {
    if (g_host != NULL && g_host->log != NULL) {
        g_host->log(g_host, level, (const uint8_t *)text, strlen(text));
    }
}

static void put_error(Pop3dBuf *err, const char *text) {
    if (err != NULL && err->append != NULL) {
        err->append(err, (const uint8_t *)text, strlen(text));
    }
}

static Pop3dStatus static_create(const uint8_t *config, uint64_t config_len, Pop3dBuf *err,
                                 void **out_instance) {
    /* No settings: accept only an empty section, so a typo is not ignored. */
    uint64_t i = 0, j = config_len;
    while (i < j && (config[i] == ' ' || config[i] == '\n' || config[i] == '\t' || config[i] == '\r')) i++;
    while (j > i && (config[j - 1] == ' ' || config[j - 1] == '\n' || config[j - 1] == '\t' ||
                     config[j - 1] == '\r'))
        j--;
    uint64_t len = j - i;
    int empty = len == 0 || (len == 2 && ((config[i] == '(' && config[i + 1] == ')') ||
                                          (config[i] == '{' && config[i + 1] == '}')));
    if (!empty) {
        put_error(err, "static-auth takes no settings; write its config as ()");
        return POP3D_PERM_FAIL;
    }
    char line[64];
    snprintf(line, sizeof line, "static-auth ready with %u users", (unsigned)USER_COUNT);
    log_line(POP3D_LOG_INFO, line);
    *out_instance = &g_instance_token;
    return POP3D_OK;
}

static void static_destroy(void *instance) { (void)instance; }

/* Case-insensitive name match that always scans the whole table entry. */
static int name_matches(const char *entry, const uint8_t *typed, uint64_t typed_len) {
    size_t entry_len = strlen(entry);
    unsigned diff = entry_len != typed_len;
    for (size_t k = 0; k < entry_len; k++) {
        uint8_t t = k < typed_len ? typed[k] : 0;
        if (t >= 'A' && t <= 'Z') t = (uint8_t)(t - 'A' + 'a');
        diff |= (unsigned)(t ^ (uint8_t)entry[k]);
    }
    return diff == 0;
}

/* Compares without stopping at the first difference. */
static int password_matches(const char *entry, const uint8_t *typed, uint64_t typed_len) {
    size_t entry_len = strlen(entry);
    unsigned diff = entry_len != typed_len;
    for (size_t k = 0; k < entry_len; k++) {
        uint8_t t = k < typed_len ? typed[k] : 0;
        diff |= (unsigned)(t ^ (uint8_t)entry[k]);
    }
    return diff == 0;
}

static const struct user *find_user(const uint8_t *name, uint64_t name_len) {
    const struct user *found = NULL;
    for (size_t k = 0; k < USER_COUNT; k++) {
        if (name_matches(USERS[k].name, name, name_len) && found == NULL) found = &USERS[k];
    }
    return found;
}

static Pop3dStatus fill_user(const struct user *user, Pop3dUserOut *out) {
    Pop3dStatus status = out->set_name(out, (const uint8_t *)user->name, strlen(user->name));
    if (status != POP3D_OK) return status;
    if (user->home != NULL) {
        status = out->set_home(out, (const uint8_t *)user->home, strlen(user->home));
        if (status != POP3D_OK) return status;
    }
    char count[24];
    int n = snprintf(count, sizeof count, "%llu", (unsigned long long)g_failed_logins);
    return out->add_extra(out, (const uint8_t *)"failed_logins", 13, (const uint8_t *)count,
                          (uint64_t)n);
}

static Pop3dStatus static_authenticate(void *instance, const uint8_t *user, uint64_t user_len,
                                       const uint8_t *password, uint64_t password_len,
                                       Pop3dUserOut *out, Pop3dBuf *err) {
    (void)instance;
    (void)err;
    const struct user *found = find_user(user, user_len);
    /* Check a password even for unknown users, so both take the same time. */
    const char *expected = found != NULL ? found->password : USERS[0].password;
    int ok = password_matches(expected, password, password_len) && found != NULL;
    if (!ok) {
        g_failed_logins++;
        return POP3D_DENIED;
    }
    return fill_user(found, out);
}

static Pop3dStatus static_get_secret(void *instance, const uint8_t *user, uint64_t user_len,
                                     Pop3dBuf *secret, Pop3dUserOut *out, Pop3dBuf *err) {
    (void)instance;
    (void)err;
    const struct user *found = find_user(user, user_len);
    if (found == NULL) return POP3D_NOT_FOUND;
    /* Secrets are Dovecot-style {SCHEME}data strings; this table holds
     * plaintext passwords. */
    static const char scheme[] = "{PLAIN}";
    Pop3dStatus status = secret->append(secret, (const uint8_t *)scheme, sizeof scheme - 1);
    if (status != POP3D_OK) return status;
    status = secret->append(secret, (const uint8_t *)found->password, strlen(found->password));
    if (status != POP3D_OK) return status;
    return fill_user(found, out);
}

static const Pop3dAuthTable TABLE = {
    .size = sizeof(Pop3dAuthTable),
    .create = static_create,
    .destroy = static_destroy,
    .authenticate = static_authenticate,
    .get_secret = static_get_secret,
};

static const Pop3dPluginHeader HEADER = {
    .magic = POP3D_PLUGIN_MAGIC,
    .abi_major = POP3D_ABI_MAJOR,
    .abi_minor = POP3D_ABI_MINOR,
    .header_size = sizeof(Pop3dPluginHeader),
    .kind = POP3D_KIND_AUTH,
    .flags = 0, /* not thread-safe: see the file comment */
    .name = "static-auth",
    .table = &TABLE,
};

/* The name-specific entry symbol, found when the file is libstatic_auth.so. */
const Pop3dPluginHeader *pop3d_plugin_static_auth(const Pop3dHost *host) {
    g_host = host;
    return &HEADER;
}

/* The generic alias, found whatever the file is called. A plugin that may be
 * linked into pop3d as a built-in must not export it (two would clash). */
const Pop3dPluginHeader *pop3d_plugin_entry(const Pop3dHost *host) {
    return pop3d_plugin_static_auth(host);
}
