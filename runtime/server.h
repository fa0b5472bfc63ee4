/* dconn.server: the HTTP server the agent's API runs on (server.c). */
#ifndef DCONN_SERVER_H
#define DCONN_SERVER_H

#include "host.h"

/* Closes every server of the host: stops listening, cancels running handlers, drops the
 * connections and waits (bounded, running the loop) until their memory is released. The close of
 * the dconn.server module record (modules.c): outside uv_run, after the tasks were killed. */
void dc_server_close_all(dc_host *H);

/* SIGPIPE made harmless for the process: a write to a closed socket or pipe fails with EPIPE. */
void dc_survive_sigpipe(void);

#endif
