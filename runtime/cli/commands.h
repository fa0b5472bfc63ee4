/* `dconn predict`, `dconn runs`, `dconn place`: subcommands done by a Lua module's main(). */
#ifndef DCONN_COMMANDS_H
#define DCONN_COMMANDS_H

typedef struct dc_command {
  const char *name;   /* as typed after dconn */
  const char *module; /* require()d; its main(args...) returns the exit status */
  const char *help;
} dc_command;

/* NULL when NAME is not one of them. */
const dc_command *dc_command_find(const char *name);
/* argv[0] is the command's name; returns the exit status. */
int dc_command_main(const dc_command *cmd, int argc, char **argv);

#endif
