/* Commands of the imgd CLI that live in their own files. */
#ifndef IMGD_CLI_CLI_H
#define IMGD_CLI_CLI_H

int         imgd_cli_generate(int argc, char **argv);
const char *imgd_cli_generate_usage(void);
int         imgd_cli_serve(int argc, char **argv);
const char *imgd_cli_serve_usage(void);
int         imgd_cli_pull(int argc, char **argv);
const char *imgd_cli_pull_usage(void);
int         imgd_cli_resolve(int argc, char **argv);
const char *imgd_cli_resolve_usage(void);

#endif
