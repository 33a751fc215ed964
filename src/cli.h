/* Subcommands of the atlasvi program, one file each (src/cmd_<name>.c). Each returns the
 * process exit code and is called on every rank. */
#ifndef AV_CLI_H
#define AV_CLI_H

int av_cmd_train(int argc, char **argv);
int av_cmd_latent(int argc, char **argv);
int av_cmd_normalize(int argc, char **argv);
int av_cmd_info(int argc, char **argv);
int av_cmd_simulate(int argc, char **argv);
int av_cmd_de(int argc, char **argv);
int av_cmd_posterior(int argc, char **argv);
int av_cmd_hvg(int argc, char **argv);
int av_cmd_pca(int argc, char **argv);
int av_cmd_export(int argc, char **argv);
int av_cmd_import(int argc, char **argv);

/* Shared option parsing: "--name value" and "--name=value". Returns the value for
 * argv[*i] if it matches name (advancing *i past a separate value), else NULL.
 * A flag given without its value is an error reported through *missing. */
const char *av_opt(int argc, char **argv, int *i, const char *name, int *missing);

#endif
