/*
 * main.c - the latch binary: `latch serve` and the operator commands.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "app.h"
#include "core/config.h"
#include "domain/catalog.h"
#include "net/http_server.h"
#include "core/log.h"
#include "store/store.h"
#include "store/store_export.h"
#include "util/xalloc.h"
#include "crypto/pwhash.h"
#include "crypto/vault.h"
#include "domain/creds.h"

static int
usage(FILE *f)
{
    (void)fprintf(
        f,
        "latch %s - link your customers' third-party accounts (Nango-compatible API)\n\n"
        "usage: latch <command> [args]\n\n"
        "commands:\n"
        "  serve                 run the API and the Connect UI\n"
        "  migrate               apply database migrations and exit\n"
        "  keys rotate           add a new encryption key and re-encrypt every secret\n"
        "  keys retire <kid>     remove an old key (after rotate)\n"
        "  keys status           show key ids and how many secrets each protects\n"
        "  keys create-secret [env]  create another API secret key (default env: dev)\n"
        "  env create <name>     create an environment (prints its secret key)\n"
        "  env list              list environments\n"
        "  env set-webhook <name> <url> [secondary-url]\n"
        "  env webhook-key <name>    print the webhook signing key\n"
        "  admin create <email> [--generate]  create a dashboard (/admin) account\n"
        "  admin list | delete <email>\n"
        "  export <file>         dump every row (ciphertexts verbatim) to a file\n"
        "  import <file>         load a dump into an empty database (SQLite <-> PostgreSQL)\n"
        "  version               print the version\n\n"
        "Run `latch <command> --help` for details. Configuration is read from the\n"
        "environment:\n\n",
        LATCH_VERSION);
    config_help(f);
    return f == stderr ? 2 : 0;
}

static bool
wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static int
die(const char *what, const struct latch_err *err, latch_rc rc)
{
    (void)fprintf(stderr, "latch: %s: %s\n", what, err->msg[0] ? err->msg : latch_strerror(rc));
    return 1;
}

/*
 * A core file or a ptrace attach would expose decrypted credentials, the encryption key and the
 * index key. Off unless LATCH_ALLOW_CORE_DUMPS: RLIMIT_CORE 0 (no core file, also not through a
 * core_pattern pipe) and PR_SET_DUMPABLE 0 (no ptrace by other unprivileged processes, /proc/self
 * files owned by root).
 */
static void
core_dumps_setup(const struct config *cfg)
{
    struct rlimit rl;

    if (!cfg->allow_core_dumps) {
        rl.rlim_cur = 0;
        rl.rlim_max = 0;
        if (setrlimit(RLIMIT_CORE, &rl) != 0)
            log_warn("cannot disable core dumps", "call=setrlimit");
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
            log_warn("cannot disable core dumps", "call=prctl");
    }
    if (getrlimit(RLIMIT_CORE, &rl) != 0)
        rl.rlim_cur = RLIM_INFINITY;
    log_info("core dumps", "dumpable=%d core_limit=%lld", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0),
             rl.rlim_cur == RLIM_INFINITY ? -1LL : (long long)rl.rlim_cur);
}

static int
cmd_serve(const struct config *cfg)
{
    struct app a;
    struct latch_err err;
    sigset_t set;
    int sig = 0;
    char key[37];
    struct store_env dev;
    latch_rc rc;

    latch_err_clear(&err);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads inherit: only main handles them */
    core_dumps_setup(cfg);
    rc = app_start(&a, cfg, &err);
    if (rc != LATCH_OK) {
        /* stop what did start: background threads must not outlive `a` */
        app_stop(&a);
        return die("cannot start", &err, rc);
    }
    memset(&dev, 0, sizeof dev);
    if (store_env_get_by_name(a.store, "dev", &dev) == LATCH_OK &&
        app_ensure_secret_key(&a, dev.id, key) == LATCH_OK && key[0] != '\0') {
        printf("\n  A secret key for the dev environment was created. It is shown only once:\n\n"
               "      %s\n\n  Keep it in your backend's secrets (Authorization: Bearer <key>).\n",
               key);
        explicit_bzero(key, sizeof key);
    }
    store_env_clear(&dev);
    printf("\n  latch %s is running (store: %s)\n"
           "    API:         http://%s:%u\n"
           "    Connect UI:  %s/ui/  (open a connect_link from POST /connect/sessions)\n"
           "    Health:      http://%s:%u/health\n\n",
           LATCH_VERSION, store_backend(a.store), cfg->bind, http_server_port(a.http),
           cfg->public_url, cfg->bind, http_server_port(a.http));
    /* the banner may carry the only copy of a new dev secret key: say so when it is lost */
    if (fflush(stdout) != 0 || ferror(stdout))
        log_warn("could not write the start-up banner to stdout",
                 "hint=\"latch keys create-secret makes another secret key\"");
    log_info("listening", "port=%u", http_server_port(a.http));
    (void)sigwait(&set, &sig);
    log_info("shutting down", "signal=%d", sig);
    app_stop(&a);
    return 0;
}

static latch_rc
reseal_cb(const struct store_sealed_ref *ref, char **new_sealed, void *ud)
{
    struct vault *v = ud;
    char kid[VAULT_KID_LEN + 1], primary[VAULT_KID_LEN + 1];
    char col[64];
    char *aad;
    unsigned char *pt = NULL;
    size_t len = 0;
    size_t cl = strlen(ref->column);
    latch_rc rc;

    *new_sealed = NULL;
    if (strcmp(ref->table, "connections") == 0) {
        /* bound to their owner (domain/creds.h): legacy-AAD rows move to the owner binding too */
        struct creds_owner o = {ref->env_id, ref->provider_config_key, ref->connection_id,
                                ref->row};

        return creds_reseal(v, &o, &o, ref->sealed, true, new_sealed);
    }
    vault_primary_kid(v, primary);
    if (vault_envelope_kid(ref->sealed, kid) == LATCH_OK && strcmp(kid, primary) == 0)
        return LATCH_OK; /* already under the new key */
    if (strcmp(ref->table, "integrations") == 0) {
        /* an OAuth app's credentials, bound to env + unique_key (creds_app_aad) */
        json_t *obj = NULL;

        aad = creds_app_aad(ref->env_id, ref->provider_config_key);
        rc = creds_open_aad(v, aad, ref->sealed, &obj);
        if (rc == LATCH_OK)
            rc = creds_seal_aad(v, aad, obj, new_sealed);
        creds_free(obj);
        free(aad);
        return rc;
    }
    if (cl > 7 && strcmp(ref->column + cl - 7, "_sealed") == 0)
        cl -= 7;
    if (cl >= sizeof col)
        return LATCH_E_INVAL;
    memcpy(col, ref->column, cl);
    col[cl] = '\0';
    aad = xasprintf("%s:%s:%s", ref->table, ref->row, col);
    rc = vault_open(v, aad, ref->sealed, &pt, &len);
    if (rc == LATCH_OK) {
        rc = vault_seal(v, aad, pt, len, new_sealed);
        vault_plain_free(pt, len);
    }
    free(aad);
    return rc;
}

static int
cmd_keys(const struct config *cfg, int argc, char **argv)
{
    struct app a;
    struct latch_err err;
    latch_rc rc;
    int ret = 0;

    latch_err_clear(&err);
    if (argc < 1 || wants_help(argc + 1, argv - 1)) {
        printf(
            "usage: latch keys rotate | retire <kid> | status | create-secret [env]\n\n"
            "rotate: adds a fresh key to LATCH_KEY_FILE (it becomes the primary), re-encrypts\n"
            "every stored secret under it (running servers keep serving and pick up the new\n"
            "key), and records the new key's fingerprint. Then `latch keys retire <old kid>`.\n");
        return argc < 1 ? 2 : 0;
    }
    rc = app_open_data(&a, cfg, false, &err);
    if (rc != LATCH_OK)
        return die("cannot open the store", &err, rc);
    if (strcmp(argv[0], "rotate") == 0) {
        char kid[VAULT_KID_LEN + 1];
        char fp[65];
        size_t n = 0;

        rc = vault_rotate_add_key(a.vault, kid, &err);
        if (rc != LATCH_OK) {
            ret = die("rotate", &err, rc);
            goto out;
        }
        /* new seals by running servers use the new key within about a second */
        rc = store_reseal_all(a.store, reseal_cb, a.vault, &n);
        if (rc == LATCH_OK) {
            vault_primary_fingerprint(a.vault, fp);
            rc = store_meta_set(a.store, "key_fingerprint", fp);
        }
        if (rc != LATCH_OK) {
            ret = die("re-encrypt", &err, rc);
            goto out;
        }
        printf("new primary key %s; %zu secrets re-encrypted\n", kid, n);
    } else if (strcmp(argv[0], "retire") == 0 && argc == 2) {
        rc = vault_retire_key(a.vault, argv[1], &err);
        if (rc != LATCH_OK)
            ret = die("retire", &err, rc);
        else
            printf("key %s retired\n", argv[1]);
    } else if (strcmp(argv[0], "status") == 0) {
        char kid[VAULT_KID_LEN + 1];

        vault_primary_kid(a.vault, kid);
        printf("primary key id: %s\nstore: %s\n", kid, store_backend(a.store));
    } else if (strcmp(argv[0], "create-secret") == 0) {
        struct store_env e;
        char key[37];

        memset(&e, 0, sizeof e);
        rc = store_env_get_by_name(a.store, argc > 1 ? argv[1] : "dev", &e);
        if (rc == LATCH_OK)
            rc = app_create_secret_key(&a, e.id, key);
        if (rc != LATCH_OK) {
            ret = die("create-secret", &err, rc);
        } else {
            printf("%s\n", key);
            explicit_bzero(key, sizeof key);
        }
        store_env_clear(&e);
    } else {
        (void)fprintf(stderr, "latch keys: unknown subcommand\n");
        ret = 2;
    }
out:
    app_stop(&a);
    return ret;
}

static int
cmd_env(const struct config *cfg, int argc, char **argv)
{
    struct app a;
    struct latch_err err;
    latch_rc rc;
    int ret = 0;

    latch_err_clear(&err);
    if (argc < 1 || wants_help(argc + 1, argv - 1)) {
        printf("usage: latch env create <name> | list | set-webhook <name> <url> [secondary] |\n"
               "                 webhook-key <name>\n\n"
               "Every row belongs to one environment; a secret key sees only its own.\n");
        return argc < 1 ? 2 : 0;
    }
    rc = app_open_data(&a, cfg, false, &err);
    if (rc != LATCH_OK)
        return die("cannot open the store", &err, rc);
    if (strcmp(argv[0], "create") == 0 && argc == 2) {
        int64_t id = 0;
        char key[37];

        rc = app_create_env(&a, argv[1], &id, &err);
        if (rc == LATCH_OK)
            rc = app_create_secret_key(&a, id, key);
        if (rc != LATCH_OK) {
            ret = die("env create", &err, rc);
        } else {
            printf("environment %s created; its secret key (shown once):\n%s\n", argv[1], key);
            explicit_bzero(key, sizeof key);
        }
    } else if (strcmp(argv[0], "list") == 0) {
        struct store_env *v = NULL;
        size_t n = 0;

        rc = store_env_list(a.store, &v, &n);
        for (size_t i = 0; rc == LATCH_OK && i < n; i++)
            printf("%s\twebhook=%s\n", v[i].name, v[i].webhook_url ? v[i].webhook_url : "-");
        store_env_list_free(v, n);
    } else if (strcmp(argv[0], "set-webhook") == 0 && (argc == 3 || argc == 4)) {
        struct store_env e;

        memset(&e, 0, sizeof e);
        rc = store_env_get_by_name(a.store, argv[1], &e);
        if (rc == LATCH_OK) {
            free(e.webhook_url);
            e.webhook_url = argv[2][0] ? xstrdup(argv[2]) : NULL;
            if (argc == 4) {
                free(e.webhook_url_secondary);
                e.webhook_url_secondary = argv[3][0] ? xstrdup(argv[3]) : NULL;
            }
            rc = store_env_update_webhooks(a.store, &e);
        }
        if (rc != LATCH_OK)
            ret = die("set-webhook", &err, rc);
        store_env_clear(&e);
    } else if (strcmp(argv[0], "webhook-key") == 0 && argc == 2) {
        struct store_env e;
        unsigned char *pt = NULL;
        size_t len = 0;
        char *aad = NULL;

        memset(&e, 0, sizeof e);
        rc = store_env_get_by_name(a.store, argv[1], &e);
        if (rc == LATCH_OK) {
            aad = xasprintf("environments:%lld:webhook_key", (long long)e.id);
            rc = vault_open(a.vault, aad, e.webhook_key_sealed, &pt, &len);
        }
        if (rc != LATCH_OK)
            ret = die("webhook-key", &err, rc);
        else
            printf("%s\n", (const char *)pt);
        if (pt != NULL)
            vault_plain_free(pt, len);
        free(aad);
        store_env_clear(&e);
    } else {
        (void)fprintf(stderr, "latch env: unknown subcommand\n");
        ret = 2;
    }
    app_stop(&a);
    return ret;
}

/* Reads one line (without its newline) from f into buf; false at EOF or when it is too long. */
static bool
read_line(FILE *f, char *buf, size_t size)
{
    size_t n;

    if (fgets(buf, (int)size, f) == NULL)
        return false;
    n = strlen(buf);
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if (!feof(f))
        return false; /* longer than buf */
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return true;
}

/* Prompts on the terminal with echo off; false on error. */
static bool
read_secret_tty(const char *prompt, char *buf, size_t size)
{
    FILE *tty = fopen("/dev/tty", "r+");
    struct termios old, quiet;
    bool ok;

    if (tty == NULL)
        return false;
    (void)fputs(prompt, tty);
    (void)fflush(tty);
    if (tcgetattr(fileno(tty), &old) != 0) {
        (void)fclose(tty);
        return false;
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    (void)tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    ok = read_line(tty, buf, size);
    (void)tcsetattr(fileno(tty), TCSAFLUSH, &old);
    (void)fputc('\n', tty);
    (void)fclose(tty);
    return ok;
}

/* A random password: 18 bytes as URL-safe base64 (24 characters, 144 bits). */
static void
generate_password(char out[25])
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char hex[49];

    vault_random_hex(hex, 24); /* 24 random bytes, as 48 hex digits */
    for (int i = 0; i < 24; i++) {
        char c = hex[2 * i + 1]; /* the low nibble: 6 bits come from two digits */
        char b = hex[2 * i];
        unsigned v = (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10) |
                     (unsigned)(b <= '9' ? b - '0' : b - 'a' + 10) << 4;

        out[i] = alpha[v & 63];
    }
    out[24] = '\0';
    explicit_bzero(hex, sizeof hex);
}

/* Accounts are keyed by the lower-cased email; a plausible address only. */
static bool
admin_email_ok(char *email)
{
    size_t n = strlen(email);
    char *at = strchr(email, '@');

    if (n < 3 || n > 254 || at == NULL || at == email || at[1] == '\0' || strchr(at + 1, '@'))
        return false;
    for (char *p = email; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return false;
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    return true;
}

static int
cmd_admin(const struct config *cfg, int argc, char **argv)
{
    struct app a;
    struct latch_err err;
    latch_rc rc;
    int ret = 0;
    char pw[PWHASH_MAX_LEN + 2], pw2[PWHASH_MAX_LEN + 2];
    char email[256];
    bool generate = false;

    latch_err_clear(&err);
    if (argc < 1 || wants_help(argc + 1, argv - 1)) {
        printf("usage: latch admin create <email> [--generate] | list | delete <email>\n\n"
               "Accounts of the dashboard at /admin. create reads the password from the\n"
               "terminal (no echo, asked twice) or from the first line of stdin; with\n"
               "--generate it makes a random one and prints it once. Passwords are stored as\n"
               "scrypt hashes (at least %d characters).\n",
               PWHASH_MIN_LEN);
        return argc < 1 ? 2 : 0;
    }
    pw[0] = pw2[0] = '\0';
    if (strcmp(argv[0], "create") == 0 && (argc == 2 || argc == 3)) {
        if (argc == 3 && strcmp(argv[2], "--generate") != 0) {
            (void)fprintf(stderr, "latch admin create: unknown option %s\n", argv[2]);
            return 2;
        }
        generate = argc == 3;
        if (strlen(argv[1]) >= sizeof email) {
            (void)fprintf(stderr, "latch admin: the email is too long\n");
            return 2;
        }
        (void)snprintf(email, sizeof email, "%s", argv[1]);
        if (!admin_email_ok(email)) {
            (void)fprintf(stderr, "latch admin: not an email address: %s\n", argv[1]);
            return 2;
        }
        if (generate) {
            generate_password(pw);
        } else if (isatty(STDIN_FILENO)) {
            if (!read_secret_tty("Password: ", pw, sizeof pw) ||
                !read_secret_tty("Password (again): ", pw2, sizeof pw2) || strcmp(pw, pw2) != 0) {
                (void)fprintf(stderr, "latch admin: the passwords differ\n");
                ret = 1;
                goto wipe;
            }
        } else if (!read_line(stdin, pw, sizeof pw)) {
            (void)fprintf(stderr, "latch admin: no password on stdin (or --generate)\n");
            ret = 1;
            goto wipe;
        }
        if (strlen(pw) < PWHASH_MIN_LEN || strlen(pw) > PWHASH_MAX_LEN) {
            (void)fprintf(stderr, "latch admin: the password must have %d to %d characters\n",
                          PWHASH_MIN_LEN, PWHASH_MAX_LEN);
            ret = 1;
            goto wipe;
        }
    }
    rc = app_open_data(&a, cfg, false, &err);
    if (rc != LATCH_OK) {
        ret = die("cannot open the store", &err, rc);
        goto wipe;
    }
    if (strcmp(argv[0], "create") == 0 && (argc == 2 || argc == 3)) {
        char *hash = NULL;

        rc = pwhash_make(pw, &hash);
        if (rc == LATCH_OK)
            rc = store_admin_create(a.store, email, hash, NULL);
        free(hash);
        if (rc == LATCH_E_CONFLICT) {
            (void)fprintf(stderr, "latch admin: %s already exists\n", email);
            ret = 1;
        } else if (rc != LATCH_OK) {
            ret = die("admin create", &err, rc);
        } else if (generate) {
            printf("admin %s created; its password (shown once):\n%s\n", email, pw);
        } else {
            printf("admin %s created\n", email);
        }
    } else if (strcmp(argv[0], "list") == 0 && argc == 1) {
        struct store_admin *v = NULL;
        size_t n = 0;

        rc = store_admin_list(a.store, &v, &n);
        if (rc != LATCH_OK)
            ret = die("admin list", &err, rc);
        for (size_t i = 0; rc == LATCH_OK && i < n; i++)
            printf("%s\tlast_login=%lld\tlocked=%s\n", v[i].email, (long long)v[i].last_login_at,
                   v[i].locked_until > 0 ? "yes" : "no");
        store_admin_list_free(v, n);
    } else if (strcmp(argv[0], "delete") == 0 && argc == 2) {
        (void)snprintf(email, sizeof email, "%s", argv[1]);
        (void)admin_email_ok(email); /* lower-cases */
        rc = store_admin_delete(a.store, email);
        if (rc == LATCH_E_NOT_FOUND) {
            (void)fprintf(stderr, "latch admin: no account %s\n", email);
            ret = 1;
        } else if (rc != LATCH_OK) {
            ret = die("admin delete", &err, rc);
        } else {
            printf("admin %s deleted (and signed out)\n", email);
        }
    } else {
        (void)fprintf(stderr, "latch admin: unknown subcommand\n");
        ret = 2;
    }
    app_stop(&a);
wipe:
    explicit_bzero(pw, sizeof pw);
    explicit_bzero(pw2, sizeof pw2);
    return ret;
}

/*
 * export/import work on the store alone: the dump carries the meta rows (key fingerprint, sealed
 * index key), so no key is needed and import must run before the first `latch serve`.
 */
static int
cmd_dump(const struct config *cfg, bool is_export, int argc, char **argv)
{
    struct store *st = NULL;
    struct latch_err err;
    FILE *f = NULL;
    latch_rc rc;
    int ret = 0;

    latch_err_clear(&err);
    if (argc != 1 || wants_help(argc + 1, argv - 1)) {
        printf("usage: latch %s <file>   (\"-\" for %s)\n\n%s\n", is_export ? "export" : "import",
               is_export ? "stdout" : "stdin",
               is_export ? "Writes every row of LATCH_DATABASE_URL as JSON lines. Ciphertexts are "
                           "copied verbatim;\ntreat the file like the database."
                         : "Loads a dump into LATCH_DATABASE_URL, which must be empty (migrated "
                           "here).\nKeep the same encryption key: the secrets stay sealed.");
        return argc != 1 ? 2 : 0;
    }
    rc = store_open(cfg->database_url, &st, &err);
    if (rc == LATCH_OK)
        rc = store_migrate(st, &err);
    if (rc != LATCH_OK) {
        ret = die("cannot open the store", &err, rc);
        goto out;
    }
    if (strcmp(argv[0], "-") == 0)
        f = is_export ? stdout : stdin;
    else
        f = fopen(argv[0], is_export ? "wx" : "r"); /* never overwrite an existing dump */
    if (f == NULL) {
        (void)fprintf(stderr, "latch: cannot open %s\n", argv[0]);
        ret = 1;
        goto out;
    }
    rc = is_export ? store_export(st, f, &err) : store_import(st, f, &err);
    if (f != stdout && f != stdin && fclose(f) != 0 && rc == LATCH_OK) {
        latch_err_set(&err, "cannot write %s", argv[0]);
        rc = LATCH_E_IO;
    }
    if (rc != LATCH_OK)
        ret = die(is_export ? "export" : "import", &err, rc);
    else
        (void)fprintf(stderr, "latch: %s done\n", is_export ? "export" : "import");
out:
    store_close(st);
    return ret;
}

int
main(int argc, char **argv)
{
    struct config cfg;
    struct latch_err err;
    int lvl, ret;
    latch_rc rc;

    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0)
        return usage(stdout);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("latch %s\n"
               "provider catalogue: %s\n"
               "  (LATCH_PROVIDERS_FILE replaces it with a file of your own)\n",
               LATCH_VERSION, catalog_builtin_origin());
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0 && wants_help(argc, argv)) {
        printf(
            "usage: latch serve\n\nRuns the API and the Connect UI. Settings (environment):\n\n");
        config_help(stdout);
        return 0;
    }
    if (strcmp(argv[1], "migrate") == 0 && wants_help(argc, argv)) {
        printf("usage: latch migrate\n\nApplies pending database migrations and exits.\n");
        return 0;
    }
    latch_err_clear(&err);
    rc = config_load(&cfg, &err);
    if (rc != LATCH_OK)
        return die("configuration", &err, rc);
    lvl = log_level_parse(cfg.log_level);
    if (lvl < 0) {
        (void)fprintf(stderr, "latch: LATCH_LOG_LEVEL must be debug, info, warn or error\n");
        return 1;
    }
    log_min_level = (enum log_level)lvl;
    (void)signal(SIGPIPE, SIG_IGN); /* fails only for an invalid signal number */
    umask(077);
    {
        /* every proxied request holds two sockets: use the whole descriptor allowance */
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            (void)setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    json_object_seed(0);

    if (strcmp(argv[1], "serve") == 0) {
        ret = cmd_serve(&cfg);
    } else if (strcmp(argv[1], "migrate") == 0) {
        struct app a;

        rc = app_open_data(&a, &cfg, true, &err);
        ret = rc == LATCH_OK ? 0 : die("migrate", &err, rc);
        if (rc == LATCH_OK)
            printf("schema version %d\n", store_schema_version(a.store));
        app_stop(&a);
    } else if (strcmp(argv[1], "keys") == 0) {
        ret = cmd_keys(&cfg, argc - 2, argv + 2);
    } else if (strcmp(argv[1], "env") == 0) {
        ret = cmd_env(&cfg, argc - 2, argv + 2);
    } else if (strcmp(argv[1], "admin") == 0) {
        ret = cmd_admin(&cfg, argc - 2, argv + 2);
    } else if (strcmp(argv[1], "export") == 0 || strcmp(argv[1], "import") == 0) {
        ret = cmd_dump(&cfg, strcmp(argv[1], "export") == 0, argc - 2, argv + 2);
    } else {
        ret = usage(stderr);
    }
    curl_global_cleanup();
    config_free(&cfg);
    return ret;
}
