/*
 * Integration: `understudy mock-kafka` as a Kafka protocol peer for an
 * independent client (kcat).  Each test starts its own mock cluster process
 * so topics and offsets never leak between tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tdaemon.h"
#include "testenv.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_kafka_mock_kafka_serves_topics_and_stops_cleanly(void **state)
{
    (void)state;
    struct tmock m;
    tmock_start(&m, "t.alpha,t.beta", 4);

    char *out = NULL;
    const char *argv[] = {"kcat", "-L", "-b", m.brokers, NULL};
    assert_int_equal(testenv_run(argv, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "topic \"t.alpha\" with 4 partitions"));
    assert_non_null(strstr(out, "topic \"t.beta\" with 4 partitions"));
    free(out);

    assert_int_equal(tmock_stop(&m), 0);
    struct stat sb;
    assert_int_equal(stat(m.bootfile, &sb), -1); /* removed on a clean stop */
}

static void test_kafka_kcat_roundtrip_keys_values_and_partitions(void **state)
{
    (void)state;
    struct tmock m;
    tmock_start(&m, "ops.actions", 3);

    /* 300 keyed messages; the same key must land in one partition. */
    char in[512];
    snprintf(in, sizeof in, "%s/produce-%ld.txt", testenv_get("UNDERSTUDY_TEST_TMP"),
             (long)getpid());
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    for (int i = 0; i < 300; i++)
        fprintf(f, "cr-%d\t{\"event_id\":\"e-%d\",\"n\":%d}\n", i % 17, i, i);
    assert_int_equal(fclose(f), 0);

    const char *prod[] = {"kcat",        "-P", "-b", m.brokers, "-t",
                          "ops.actions", "-K", "\t", "-X",      "enable.idempotence=true",
                          NULL};
    char *err = NULL;
    int rc = testenv_run(prod, in, NULL, &err);
    if (rc != 0)
        fail_msg("kcat -P exited %d: %s", rc, err);
    free(err);

    char *out = NULL;
    const char *cons[] = {"kcat",      "-C", "-b", m.brokers, "-t",         "ops.actions", "-o",
                          "beginning", "-e", "-q", "-f",      "%k %p %s\n", NULL};
    assert_int_equal(testenv_run(cons, NULL, &out, NULL), 0);
    assert_int_equal(count_lines(out), 300);

    int seen[300] = {0};
    int part_of_key[17];
    for (int k = 0; k < 17; k++)
        part_of_key[k] = -1;
    int parts_used[3] = {0};
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int key, part, id, n;
        assert_int_equal(
            sscanf(line, "cr-%d %d {\"event_id\":\"e-%d\",\"n\":%d}", &key, &part, &id, &n), 4);
        assert_in_range(id, 0, 299);
        assert_int_equal(id, n);
        assert_int_equal(key, id % 17);
        seen[id]++;
        if (part_of_key[key] < 0)
            part_of_key[key] = part;
        assert_int_equal(part_of_key[key], part);
        assert_in_range(part, 0, 2);
        parts_used[part] = 1;
    }
    for (int i = 0; i < 300; i++)
        assert_int_equal(seen[i], 1);
    /* 17 keys over 3 partitions: the partitioner spread them. */
    assert_true(parts_used[0] + parts_used[1] + parts_used[2] >= 2);
    free(out);
    unlink(in);
    assert_int_equal(tmock_stop(&m), 0);
}

static void test_kafka_kcat_consumer_group_reads_everything_once(void **state)
{
    (void)state;
    struct tmock m;
    tmock_start(&m, "ops.states", 3);

    char in[512];
    snprintf(in, sizeof in, "%s/group-%ld.txt", testenv_get("UNDERSTUDY_TEST_TMP"), (long)getpid());
    char text[4096] = "";
    for (int i = 0; i < 50; i++) {
        char line[64];
        snprintf(line, sizeof line, "k%d:v%d\n", i, i);
        strcat(text, line);
    }
    write_file(in, text);
    const char *prod[] = {"kcat", "-P", "-b", m.brokers, "-t", "ops.states", "-K", ":", NULL};
    assert_int_equal(testenv_run(prod, in, NULL, NULL), 0);

    /* A balanced consumer in a group: joins, gets all partitions, commits. */
    char *out = NULL;
    const char *cons[] = {"kcat", "-b", m.brokers, "-G",   "it-group",   "-o", "beginning",
                          "-e",   "-q", "-f",      "%s\n", "ops.states", NULL};
    assert_int_equal(testenv_run(cons, NULL, &out, NULL), 0);
    assert_int_equal(count_lines(out), 50);
    for (int i = 0; i < 50; i++) {
        char want[16];
        snprintf(want, sizeof want, "v%d\n", i);
        assert_non_null(strstr(out, want));
    }
    free(out);

    unlink(in);
    assert_int_equal(tmock_stop(&m), 0);
}

static void test_kafka_mock_kafka_bad_arguments_exit_2_with_usage(void **state)
{
    (void)state;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *bad[][4] = {
        {"--partitions", "0", NULL, NULL},     {"--partitions", "x", NULL, NULL},
        {"--brokers", "17", NULL, NULL},       {"--topics", "a,,b", NULL, NULL},
        {"--topics", "bad topic", NULL, NULL}, {"--nope", NULL, NULL, NULL},
        {"extra", NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[6] = {bin, "mock-kafka", bad[i][0], bad[i][1], NULL, NULL};
        char *err = NULL;
        int rc = testenv_run(argv, NULL, NULL, &err);
        if (rc != 2)
            fail_msg("mock-kafka %s %s: exit %d, want 2", bad[i][0], bad[i][1] ? bad[i][1] : "",
                     rc);
        assert_non_null(strstr(err, "usage: understudy mock-kafka"));
        free(err);
    }
}

static void test_kafka_shared_environment_broker_is_reachable(void **state)
{
    (void)state;
    char *out = NULL;
    const char *argv[] = {"kcat", "-L", "-b", testenv_get("UNDERSTUDY_TEST_BOOTSTRAP"), NULL};
    assert_int_equal(testenv_run(argv, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "topic \"ops.actions\" with 3 partitions"));
    assert_non_null(strstr(out, "topic \"ops.states\" with 3 partitions"));
    assert_non_null(strstr(out, "topic \"ops.feedback\" with 3 partitions"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_mock_kafka_serves_topics_and_stops_cleanly),
        cmocka_unit_test(test_kafka_kcat_roundtrip_keys_values_and_partitions),
        cmocka_unit_test(test_kafka_kcat_consumer_group_reads_everything_once),
        cmocka_unit_test(test_kafka_mock_kafka_bad_arguments_exit_2_with_usage),
        cmocka_unit_test(test_kafka_shared_environment_broker_is_reachable),
    };
    return cmocka_run_group_tests_name("kafka", tests, NULL, NULL);
}
