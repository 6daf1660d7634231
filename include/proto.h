/*
 * proto.h: the channel between vmcgi (host) and its agent (guest).
 *
 * The channel is a virtio-serial port: a byte stream with no framing of its
 * own, so every message is a fixed header followed by a payload of at most
 * PROTO_MAX_PAYLOAD bytes.  Both ends are x86_64 and integers travel in host
 * byte order.  Each side treats what it reads as hostile: a bad type or
 * length ends that VM, never the reader.
 *
 * One VM serves one event:
 *
 *   guest -> host  READY(nonce 0)       once, when the template has booted
 *   -- the template is snapshotted here; clones resume below --
 *   host -> guest  HELLO(nonce, time, entropy)  repeated until answered,
 *                  because the first bytes after a restore can be lost
 *   guest -> host  READY(nonce)         clock set, RNG reseeded
 *   host -> guest  SCRIPT*  [CODE]  ENV*  RUN  STDIN*  STDIN_EOF
 *
 * A pooled clone may first get WARM(nonce), before any HELLO: the agent
 * runs a fixed command as the handler user, with no tenant input, so that
 * this QEMU process has translated the guest's fork, exec and pipe paths
 * before an event needs them, and answers WARMED(nonce).  The host then
 * stops the clone again until it is taken.
 *   guest -> host  [CODE], then STDOUT* / STDERR* interleaved, then EXIT
 *                  once
 *
 * CODE is the script compiled by the guest's python3 zygote (a hash-based
 * .pyc): the guest sends it once when it compiled the script itself, and
 * the host may send it back with the same script for a later event of the
 * same handler, which then skips the compile (see src/codecache.c).
 */
#ifndef VMCGI_PROTO_H
#define VMCGI_PROTO_H

#include <stdint.h>

#define PROTO_MAX_PAYLOAD (64 * 1024)
#define PROTO_MAX_SCRIPT (1024 * 1024)	/* sum of SCRIPT payloads */
#define PROTO_MAX_ENV 256		/* ENV messages per event */
#define PROTO_PORT_NAME "vmcgi.0"	/* virtserialport name */

enum proto_type {
	PROTO_HELLO = 1,	/* host: struct proto_hello */
	PROTO_READY,		/* guest: struct proto_ready */
	PROTO_SCRIPT,		/* host: script bytes, appended in order */
	PROTO_ENV,		/* host: one "NAME=value", no NUL inside */
	PROTO_RUN,	/* host: struct proto_run; starts the handler */
	PROTO_STDIN,		/* host: request body bytes */
	PROTO_STDIN_EOF,	/* host: empty; the body is complete */
	PROTO_STDOUT,		/* guest: handler stdout bytes */
	PROTO_STDERR,		/* guest: handler stderr bytes */
	PROTO_EXIT,		/* guest: struct proto_exit; last message */
	PROTO_WARM,		/* host: struct proto_ready; before HELLO */
	PROTO_WARMED,	/* guest: struct proto_ready; warm-up done */
	PROTO_CODE,		/* both: the script compiled; one message */
};
/* Readers refuse a type above this one. */
#define PROTO_TYPE_MAX PROTO_CODE

struct proto_hdr {
	uint32_t type;
	uint32_t len;		/* payload bytes that follow */
};

struct proto_hello {
	uint64_t nonce;		/* echoed in READY */
	int64_t sec;		/* host CLOCK_REALTIME */
	int64_t nsec;
	uint8_t entropy[64];	/* credited to the guest's RNG */
};

struct proto_ready {
	uint64_t nonce;
};

struct proto_run {
	uint32_t timeout_ms;	/* the agent kills the handler after this */
	uint32_t flags;		/* none defined yet; must be 0 */
};

enum proto_exit_kind {
	PROTO_EXITED = 1,	/* code: exit status 0..255 */
	PROTO_SIGNALED,		/* code: signal number */
	PROTO_TIMEDOUT,		/* code: 0 */
	PROTO_FAILED,	/* code: errno of the agent's failed step */
};

struct proto_exit {
	uint32_t kind;
	int32_t code;
	uint32_t elapsed_ms;	/* from exec to exit, guest clock */
	uint32_t pad;
};

#endif /* VMCGI_PROTO_H */
