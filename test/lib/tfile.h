/*
 * tfile: file helpers shared by the unit and integration tests.
 */
#ifndef UNDERSTUDY_TFILE_H
#define UNDERSTUDY_TFILE_H

#include <stddef.h>

/* The fixtures directory: $UNDERSTUDY_FIXTURES, else "fixtures" (tests run
 * from the repository root). */
const char *tfixtures_dir(void);

/* Reads a whole file, NUL-terminated (caller frees); *len (may be NULL)
 * gets its size.  Fails the test when the file cannot be read. */
char *tread_file(const char *path, size_t *len);

#endif
