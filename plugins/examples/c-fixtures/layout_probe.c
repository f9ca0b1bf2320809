/*
 * layout_probe.c - test fixture: reports the size of every ABI struct and
 * the offset of every field as the C compiler lays them out from
 * pop3d_plugin.h. tests/plugins.rs compares the report with the Rust
 * definitions in plugins/api/src/abi.rs; any difference fails the test.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pop3d_plugin.h"

/* Writes the report ("Type=size" and "Type.field@offset" lines) into buf
 * and returns its full length (which may exceed cap: then call again with a
 * bigger buffer). */
uint64_t pop3d_layout_report(char *buf, uint64_t cap) {
    size_t used = 0;
#define EMIT(fmt, ...)                                                                 \
    do {                                                                               \
        int n = snprintf(used < cap ? buf + used : NULL, used < cap ? cap - used : 0, \
                         fmt "\n", __VA_ARGS__);                                       \
        if (n > 0) used += (size_t)n;                                                  \
    } while (0)
#define SIZE(T) EMIT("%s=%zu", #T, sizeof(T))
#define FIELD(T, f) EMIT("%s.%s@%zu", #T, #f, offsetof(T, f))
    SIZE(Pop3dHost);
    FIELD(Pop3dHost, size);
    FIELD(Pop3dHost, abi_major);
    FIELD(Pop3dHost, abi_minor);
    FIELD(Pop3dHost, host_data);
    FIELD(Pop3dHost, log);
    SIZE(Pop3dPluginHeader);
    FIELD(Pop3dPluginHeader, magic);
    FIELD(Pop3dPluginHeader, abi_major);
    FIELD(Pop3dPluginHeader, abi_minor);
    FIELD(Pop3dPluginHeader, header_size);
    FIELD(Pop3dPluginHeader, kind);
    FIELD(Pop3dPluginHeader, flags);
    FIELD(Pop3dPluginHeader, name);
    FIELD(Pop3dPluginHeader, table);
    SIZE(Pop3dBuf);
    FIELD(Pop3dBuf, host);
    FIELD(Pop3dBuf, append);
    SIZE(Pop3dStr);
    FIELD(Pop3dStr, ptr);
    FIELD(Pop3dStr, len);
    SIZE(Pop3dKeyValue);
    FIELD(Pop3dKeyValue, key);
    FIELD(Pop3dKeyValue, value);
    SIZE(Pop3dUser);
    FIELD(Pop3dUser, name);
    FIELD(Pop3dUser, home);
    FIELD(Pop3dUser, extra);
    FIELD(Pop3dUser, extra_count);
    SIZE(Pop3dUserOut);
    FIELD(Pop3dUserOut, host);
    FIELD(Pop3dUserOut, set_name);
    FIELD(Pop3dUserOut, set_home);
    FIELD(Pop3dUserOut, add_extra);
    SIZE(Pop3dListSink);
    FIELD(Pop3dListSink, host);
    FIELD(Pop3dListSink, message);
    SIZE(Pop3dAuthTable);
    FIELD(Pop3dAuthTable, size);
    FIELD(Pop3dAuthTable, create);
    FIELD(Pop3dAuthTable, destroy);
    FIELD(Pop3dAuthTable, authenticate);
    FIELD(Pop3dAuthTable, get_secret);
    SIZE(Pop3dStoreTable);
    FIELD(Pop3dStoreTable, size);
    FIELD(Pop3dStoreTable, create);
    FIELD(Pop3dStoreTable, destroy);
    FIELD(Pop3dStoreTable, open);
    FIELD(Pop3dStoreTable, list);
    FIELD(Pop3dStoreTable, open_message);
    FIELD(Pop3dStoreTable, read);
    FIELD(Pop3dStoreTable, close_reader);
    FIELD(Pop3dStoreTable, commit);
    FIELD(Pop3dStoreTable, release);
    EMIT("%s=%u %s=%u %s=%u %s=%u", "magic", (unsigned)POP3D_PLUGIN_MAGIC, "major",
         (unsigned)POP3D_ABI_MAJOR, "minor", (unsigned)POP3D_ABI_MINOR, "thread_safe",
         (unsigned)POP3D_FLAG_THREAD_SAFE);
    EMIT("status %d %d %d %d %d %d %d", POP3D_OK, POP3D_DENIED, POP3D_NOT_FOUND, POP3D_IN_USE,
         POP3D_TEMP_FAIL, POP3D_PERM_FAIL, POP3D_PANICKED);
    EMIT("kind %u %u log %u %u %u %u %u", POP3D_KIND_AUTH, POP3D_KIND_STORE, POP3D_LOG_ERROR,
         POP3D_LOG_WARN, POP3D_LOG_INFO, POP3D_LOG_DEBUG, POP3D_LOG_TRACE);
#undef FIELD
#undef SIZE
#undef EMIT
    return used;
}
