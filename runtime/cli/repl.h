/* dconn repl: interactive Lua on the loop (libedit on a terminal, plain lines from a pipe). */
#ifndef DCONN_REPL_H
#define DCONN_REPL_H

#include "host.h"

/* Runs the REPL until end of input; frees the host. Returns the exit status. */
int dc_repl_main(dc_host *H, const char *policy);

#endif
