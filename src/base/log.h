/* log.h -- one line per event on stderr: "2026-11-22T03:11:10.123Z level module: message".
 * Thread-safe (one write(2) per line). The level is set once at start-up (--log-level). */
#ifndef AYDER_BASE_LOG_H
#define AYDER_BASE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

extern enum log_level log_level_min;

/* Parse "debug|info|warn|error|off"; returns 0 or ERR_INVALID. */
int log_level_parse(const char *s, enum log_level *out);
void log_emit(enum log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_D(mod, ...) do { if (log_level_min <= LOG_DEBUG) log_emit(LOG_DEBUG, mod, __VA_ARGS__); } while (0)
#define LOG_I(mod, ...) do { if (log_level_min <= LOG_INFO) log_emit(LOG_INFO, mod, __VA_ARGS__); } while (0)
#define LOG_W(mod, ...) do { if (log_level_min <= LOG_WARN) log_emit(LOG_WARN, mod, __VA_ARGS__); } while (0)
#define LOG_E(mod, ...) do { if (log_level_min <= LOG_ERROR) log_emit(LOG_ERROR, mod, __VA_ARGS__); } while (0)

#endif
