/* `dconn place`: pin a Deployment to a node (place_cli.c, lua/dconn/k8s.lua). */
#ifndef DCONN_PLACE_CLI_H
#define DCONN_PLACE_CLI_H

extern const char *const DC_PLACE_HELP;

/* argv[0] is "place"; returns the exit status (0 patched or already there, 1 refused or
 * failed, 2 bad arguments). */
int dc_place_main(int argc, char **argv);

#endif
