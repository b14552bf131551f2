/*
 * spacectl_ckpt.h -- spacectl checkpoint and backup (tools/spacectl_ckpt.c).
 */
#ifndef SPACEFS_TOOLS_SPACECTL_CKPT_H
#define SPACEFS_TOOLS_SPACECTL_CKPT_H

int spacectl_cmd_checkpoint(int argc, char **argv);
int spacectl_cmd_backup(int argc, char **argv);

#endif /* SPACEFS_TOOLS_SPACECTL_CKPT_H */
