/*
 * Integration: the command line itself.  Bad usage prints the usage on
 * stderr and exits 2; help and version exit 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testenv.h"

static void test_cli_bad_usage_exits_2_with_usage(void **state)
{
    (void)state;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    static const struct {
        const char *args[4];
        const char *want; /* in stderr */
    } cases[] = {
        {{NULL}, "usage: understudy COMMAND"},
        {{"bogus", NULL}, "unknown command 'bogus'"},
        {{"migrate", "--bogus", NULL}, "usage: understudy migrate"},
        {{"migrate", "extra", NULL}, "unexpected argument extra"},
        {{"migrate", "-c", NULL}, "needs a value"},
        {{"check-config", "--nope", NULL}, "usage: understudy check-config"},
        {{"version", "x", NULL}, "usage: understudy version"},
        {{"help", "nope", NULL}, "unknown command nope"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[6] = {bin};
        for (size_t k = 0; k < 4 && cases[i].args[k]; k++)
            argv[k + 1] = cases[i].args[k];
        char *out = NULL, *err = NULL;
        int rc = testenv_run(argv, NULL, &out, &err);
        if (rc != 2 || !strstr(err, cases[i].want))
            fail_msg("case %zu: exit %d, stderr: %s", i, rc, err);
        assert_string_equal(out, "");
        free(out);
        free(err);
    }
}

static void test_cli_help_and_version_exit_0(void **state)
{
    (void)state;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *help[] = {bin, "--help", NULL};
    const char *help_cmd[] = {bin, "help", "migrate", NULL};
    const char *version[] = {bin, "--version", NULL};
    const char *cmd_help[] = {bin, "mock-kafka", "--help", NULL};
    char *out = NULL;

    assert_int_equal(testenv_run(help, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "commands:"));
    assert_non_null(strstr(out, "migrate"));
    free(out);
    assert_int_equal(testenv_run(help_cmd, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "usage: understudy migrate [-c FILE] [--status]"));
    free(out);
    assert_int_equal(testenv_run(version, NULL, &out, NULL), 0);
    assert_int_equal(strncmp(out, "understudy ", 11), 0);
    free(out);
    assert_int_equal(testenv_run(cmd_help, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "usage: understudy mock-kafka"));
    free(out);
}

static void test_cli_migrate_unreachable_database_exits_1(void **state)
{
    (void)state;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512];
    snprintf(dsn, sizeof dsn, "host=%s/nonexistent port=1 dbname=x connect_timeout=2",
             testenv_get("UNDERSTUDY_TEST_TMP"));
    setenv("UNDERSTUDY_PG_DSN", dsn, 1);
    const char *argv[] = {bin, "migrate", NULL};
    char *err = NULL;
    int rc = testenv_run(argv, NULL, NULL, &err);
    unsetenv("UNDERSTUDY_PG_DSN");
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "cannot connect"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_bad_usage_exits_2_with_usage),
        cmocka_unit_test(test_cli_help_and_version_exit_0),
        cmocka_unit_test(test_cli_migrate_unreachable_database_exits_1),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
