/*
 * Integration tests for `understudy check-config`: the real binary
 * ($UNDERSTUDY_BIN) on the shipped file, on every bad config under
 * fixtures/bad-configs (exit 2 and the exact line of NAME.expect on
 * stderr), and with secrets in the environment and in kafka.properties,
 * which must never reach the output.
 *
 * Needs no database or broker, but like every integration test it runs
 * under scripts/devenv.sh (UNDERSTUDY_BIN, UNDERSTUDY_TEST_TMP), from the
 * repository root.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testenv.h"

#define SHIPPED         "config/understudy.yaml"
#define BAD_DIR         "fixtures/bad-configs"
#define EXIT_BAD_CONFIG 2

static void clear_env(void)
{
    unsetenv("UNDERSTUDY_CONFIG");
    unsetenv("UNDERSTUDY_PG_DSN");
    unsetenv("UNDERSTUDY_KAFKA_BROKERS");
    unsetenv("UNDERSTUDY_LOG_LEVEL");
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* Runs `understudy check-config [-c path]`; returns the exit status. */
static int check_config(const char *path, char **out, char **err)
{
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *argv_c[] = {bin, "check-config", "-c", path, NULL};
    const char *argv_none[] = {bin, "check-config", NULL};
    return testenv_run(path ? argv_c : argv_none, NULL, out, err);
}

/* True when text has want as one whole line. */
static int has_line(const char *text, const char *want)
{
    size_t n = strlen(want);
    for (const char *p = text; (p = strstr(p, want)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (run tests from the repository root)", path);
    char *buf = malloc(4096);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 4095, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void tmp_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", testenv_get("UNDERSTUDY_TEST_TMP"), name);
}

static void test_cli_config_check_shipped(void **state)
{
    char *out = NULL, *err = NULL;
    (void)state;
    int rc = check_config(SHIPPED, &out, &err);
    if (rc != 0)
        fail_msg("exit %d, stderr: %s", rc, err);
    static const char *const lines[] = {
        "# understudy effective configuration (config/understudy.yaml); secrets are masked",
        "kafka:",
        "  brokers: \"localhost:9092\"",
        "  group_id: \"understudy\"",
        "  topics:",
        "    actions: \"ops.actions\"",
        "    states: \"ops.states\"",
        "    feedback: \"ops.feedback\"",
        "  properties: {}",
        "  dsn: \"\"",
        "  - {name: \"cpa\", type: numeric}",
        "  - {name: \"vertical\", type: categorical}",
        "  hold_window: 1h",
        "  settle_window: 30m",
        "  max_message_bytes: 1MiB",
        "  batch_messages: 5000",
        "  batch_wait: 50ms",
        "  level: info",
        "  listen: \"127.0.0.1:9464\"",
        "  learning_rate: 0.3",
        "  max_bins: 255",
        "  ood_threshold: 2.0",
        "  class_weight: \"none\"",
        "  min_support: 30",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (!has_line(out, lines[i]))
            fail_msg("output lacks the line '%s':\n%s", lines[i], out);
    }

    /* The output is itself a valid configuration, with the same dump. */
    char dumped[512], *out2 = NULL;
    tmp_path("dumped.yaml", dumped, sizeof dumped);
    write_text(dumped, out);
    rc = check_config(dumped, &out2, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(strchr(out2, '\n'), strchr(out, '\n')); /* bar the header line */
    free(out);
    free(out2);
    free(err);
}

static void test_cli_config_check_defaults_without_file(void **state)
{
    char *out = NULL;
    (void)state;
    assert_int_equal(check_config(NULL, &out, NULL), 0);
    assert_true(has_line(out, "# understudy effective configuration (embedded defaults); "
                              "secrets are masked"));
    assert_true(has_line(out, "  group_id: \"understudy\""));
    free(out);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_cli_config_check_bad_fixtures(void **state)
{
    char *names[256];
    size_t n = 0, failures = 0;
    struct dirent *de;
    (void)state;

    DIR *d = opendir(BAD_DIR);
    if (!d)
        fail_msg("cannot open %s (run tests from the repository root)", BAD_DIR);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len > 5 && strcmp(de->d_name + len - 5, ".yaml") == 0) {
            assert_true(n < sizeof names / sizeof names[0]);
            names[n] = strndup(de->d_name, len - 5);
            assert_non_null(names[n]);
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_names);
    assert_true(n >= 20);

    for (size_t i = 0; i < n; i++) {
        char path[512], expect_path[512];
        char *out = NULL, *err = NULL;
        snprintf(path, sizeof path, "%s/%s.yaml", BAD_DIR, names[i]);
        snprintf(expect_path, sizeof expect_path, "%s/%s.expect", BAD_DIR, names[i]);
        char *want = read_text(expect_path);
        want[strcspn(want, "\n")] = '\0';
        int rc = check_config(path, &out, &err);
        if (rc != EXIT_BAD_CONFIG || !has_line(err, want) || out[0] != '\0') {
            print_error("%s: exit %d\n  stderr: %s  want: %s\n", names[i], rc, err, want);
            failures++;
        }
        free(want);
        free(out);
        free(err);
        free(names[i]);
    }
    print_message("%zu bad configs checked\n", n);
    if (failures)
        fail_msg("%zu of %zu bad configs gave the wrong result", failures, n);
}

static void test_cli_config_check_env_dsn_masked(void **state)
{
    static const struct {
        const char *dsn, *shown;
    } cases[] = {
        {"host=db user=app password=hunter2-kv dbname=app",
         "  dsn: \"host=db user=app password=******** dbname=app\""},
        {"postgresql://app:hunter2-uri@db:5432/app?sslmode=require",
         "  dsn: \"postgresql://app:********@db:5432/app?sslmode=require\""},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL, *err = NULL;
        setenv("UNDERSTUDY_PG_DSN", cases[i].dsn, 1);
        int rc = check_config(SHIPPED, &out, &err);
        unsetenv("UNDERSTUDY_PG_DSN");
        if (rc != 0)
            fail_msg("exit %d, stderr: %s", rc, err);
        if (!has_line(out, cases[i].shown))
            fail_msg("output lacks '%s':\n%s", cases[i].shown, out);
        assert_null(strstr(out, "hunter2"));
        assert_null(strstr(err, "hunter2"));
        free(out);
        free(err);
    }
}

static void test_cli_config_check_env_bad_log_level(void **state)
{
    char *out = NULL, *err = NULL;
    (void)state;
    setenv("UNDERSTUDY_LOG_LEVEL", "loud", 1);
    int rc = check_config(SHIPPED, &out, &err);
    unsetenv("UNDERSTUDY_LOG_LEVEL");
    assert_int_equal(rc, EXIT_BAD_CONFIG);
    assert_true(has_line(err, "UNDERSTUDY_LOG_LEVEL: must be one of debug, info, warn, error"));
    assert_string_equal(out, "");
    free(out);
    free(err);
}

static void test_cli_config_check_properties_masked(void **state)
{
    char path[512], *out = NULL, *err = NULL;
    (void)state;
    tmp_path("secrets.yaml", path, sizeof path);
    write_text(path, "kafka:\n"
                     "  properties:\n"
                     "    security.protocol: SASL_SSL\n"
                     "    sasl.username: understudy\n"
                     "    sasl.password: pw-sasl\n"
                     "    ssl.key.password: pw-key\n"
                     "    ssl.keystore.password: pw-keystore\n"
                     "    sasl.oauthbearer.client.secret: pw-oauth\n"
                     "postgres:\n"
                     "  password_file: /etc/understudy/pg-password\n");
    int rc = check_config(path, &out, &err);
    if (rc != 0)
        fail_msg("exit %d, stderr: %s", rc, err);
    assert_null(strstr(out, "pw-"));
    assert_true(has_line(out, "    \"security.protocol\": \"SASL_SSL\""));
    assert_true(has_line(out, "    \"sasl.username\": \"understudy\""));
    assert_true(has_line(out, "    \"sasl.password\": \"********\""));
    assert_true(has_line(out, "    \"ssl.key.password\": \"********\""));
    assert_true(has_line(out, "    \"ssl.keystore.password\": \"********\""));
    assert_true(has_line(out, "    \"sasl.oauthbearer.client.secret\": \"********\""));
    assert_true(has_line(out, "  password_file: \"/etc/understudy/pg-password\""));
    free(out);
    free(err);
}

static void test_cli_config_check_missing_file(void **state)
{
    char *out = NULL, *err = NULL;
    (void)state;
    assert_int_equal(check_config("fixtures/no/such.yaml", &out, &err), EXIT_BAD_CONFIG);
    assert_true(has_line(err, "fixtures/no/such.yaml: No such file or directory"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_cli_config_check_shipped, setup),
        cmocka_unit_test_setup(test_cli_config_check_defaults_without_file, setup),
        cmocka_unit_test_setup(test_cli_config_check_bad_fixtures, setup),
        cmocka_unit_test_setup(test_cli_config_check_env_dsn_masked, setup),
        cmocka_unit_test_setup(test_cli_config_check_env_bad_log_level, setup),
        cmocka_unit_test_setup(test_cli_config_check_properties_masked, setup),
        cmocka_unit_test_setup(test_cli_config_check_missing_file, setup),
    };
    return cmocka_run_group_tests_name("cli_config", tests, NULL, NULL);
}
