/*
 * LD_PRELOAD shim for tests/rocksdb/test_power_loss.py: records what a process made durable.
 *
 * Environment:
 *   POWERLOSS_DIR  absolute, symlink-free path of the watched directory (the queue)
 *   POWERLOSS_LOG  file that receives one record per durability event (appended)
 *   POWERLOSS_KILL_AT  optional N >= 1: the process SIGKILLs itself on its N-th
 *                  fsync/fdatasync of a regular file under the directory, before
 *                  the call, so whatever it wrote since the previous sync is unsynced
 *
 * Records, each written with a single write(2) on an O_APPEND descriptor, so
 * records of concurrent threads never interleave:
 *
 *   F <inode> <size> <path>    fsync/fdatasync of a regular file under the directory
 *                              returned 0; <size> is st_size taken just BEFORE the
 *                              call, i.e. bytes the call was guaranteed to cover
 *   D <inode> <path>           fsync/fdatasync of the directory (or of a directory
 *   N <inode> <name> ...       whose path starts with it, such as a "<dir>.tmp" built
 *   E                          to be renamed into place) or of one of its ancestors
 *                              returned 0, followed by the directory's entries as
 *                              listed right after the call, then E
 *   X <inode>                  a file under the directory was unlinked or replaced by
 *                              rename(2): that inode's synced content is gone
 *   R <old> <new>              rename(2) under the directory (informational)
 *
 * (The test also writes a "Z" record, followed by a baseline, before each child.)
 *
 * Only libc entry points are wrapped, which is what RocksDB inside rocksdict
 * calls through the PLT (`nm -D` shows fsync, fdatasync, rename, unlink; no
 * sync_file_range, fallocate, renameat or unlinkat).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static const char *watch_dir;
static size_t watch_len;
static int log_fd = -1;
static long kill_at;
static long file_syncs;

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_unlink)(const char *);

__attribute__((constructor)) static void shim_init(void) {
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    watch_dir = getenv("POWERLOSS_DIR");
    const char *log_path = getenv("POWERLOSS_LOG");
    if (watch_dir != NULL && log_path != NULL) {
        watch_len = strlen(watch_dir);
        log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    }
    const char *kill_text = getenv("POWERLOSS_KILL_AT");
    if (kill_text != NULL) kill_at = strtol(kill_text, NULL, 10);
}

static void emit(const char *text, size_t length) {
    int saved = errno;
    while (length > 0) {
        ssize_t written = write(log_fd, text, length);
        if (written < 0) {
            if (errno == EINTR) continue;
            break;
        }
        text += written;
        length -= (size_t)written;
    }
    errno = saved;
}

/* 1: path starts with the watched directory's path (the directory, what is inside
 * it, or a sibling such as "<dir>.tmp"); 2: path is an ancestor of it. */
static int classify(const char *path) {
    if (log_fd < 0 || path == NULL) return 0;
    if (strncmp(path, watch_dir, watch_len) == 0) return 1;
    size_t length = strlen(path);
    if (length < watch_len && strncmp(path, watch_dir, length) == 0 &&
        (watch_dir[length] == '/' || (length == 1 && path[0] == '/')))
        return 2;
    return 0;
}

static int fd_path(int fd, char *out, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t length = readlink(link, out, size - 1);
    if (length < 0) return -1;
    out[length] = '\0';
    return 0;
}

static void emit_listing(const char *path, const struct stat *directory_stat) {
    size_t capacity = 1 << 16;
    char *buffer = malloc(capacity);
    if (buffer == NULL) return;
    size_t used = (size_t)snprintf(buffer, capacity, "D %llu %s\n",
                                   (unsigned long long)directory_stat->st_ino, path);
    DIR *directory = opendir(path);
    if (directory != NULL) {
        struct dirent *entry;
        while ((entry = readdir(directory)) != NULL) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
            size_t need = strlen(entry->d_name) + 48;
            if (used + need + 4 > capacity) {
                capacity *= 2;
                char *grown = realloc(buffer, capacity);
                if (grown == NULL) break;
                buffer = grown;
            }
            used += (size_t)snprintf(buffer + used, capacity - used, "N %llu %s\n",
                                     (unsigned long long)entry->d_ino, entry->d_name);
        }
        closedir(directory);
    }
    used += (size_t)snprintf(buffer + used, capacity - used, "E\n");
    emit(buffer, used);
    free(buffer);
}

static int synced(int fd, int (*real)(int)) {
    char path[PATH_MAX];
    struct stat before;
    int watched = 0;
    if (log_fd >= 0 && fd_path(fd, path, sizeof path) == 0 && fstat(fd, &before) == 0)
        watched = classify(path);
    if (watched == 1 && S_ISREG(before.st_mode) && kill_at > 0 &&
        __atomic_add_fetch(&file_syncs, 1, __ATOMIC_SEQ_CST) == kill_at)
        kill(getpid(), SIGKILL);
    int result = real(fd);
    if (result != 0 || watched == 0) return result;
    int saved = errno;
    if (S_ISDIR(before.st_mode)) {
        emit_listing(path, &before);
    } else if (watched == 1 && S_ISREG(before.st_mode)) {
        char line[PATH_MAX + 64];
        int length = snprintf(line, sizeof line, "F %llu %lld %s\n",
                              (unsigned long long)before.st_ino, (long long)before.st_size, path);
        emit(line, (size_t)length);
    }
    errno = saved;
    return result;
}

int fsync(int fd) { return synced(fd, real_fsync); }

int fdatasync(int fd) { return synced(fd, real_fdatasync); }

static void emit_dropped(const struct stat *victim) {
    char line[64];
    int length = snprintf(line, sizeof line, "X %llu\n", (unsigned long long)victim->st_ino);
    emit(line, (size_t)length);
}

int rename(const char *old_path, const char *new_path) {
    struct stat victim;
    int watched = classify(new_path) == 1 || classify(old_path) == 1;
    int replaces = watched && lstat(new_path, &victim) == 0;
    int result = real_rename(old_path, new_path);
    if (result == 0 && watched) {
        int saved = errno;
        if (replaces) emit_dropped(&victim);
        char line[2 * PATH_MAX + 8];
        int length = snprintf(line, sizeof line, "R %s %s\n", old_path, new_path);
        emit(line, (size_t)length);
        errno = saved;
    }
    return result;
}

int unlink(const char *path) {
    struct stat victim;
    int watched = classify(path) == 1 && lstat(path, &victim) == 0;
    int result = real_unlink(path);
    if (result == 0 && watched) emit_dropped(&victim);
    return result;
}
