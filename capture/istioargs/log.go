package istioargs

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/internal/clip"
)

// LogFlags are istio's logging flags, so that an istio-init command line
// that sets them still parses. shunt logs with log/slog.
type LogFlags struct {
	level, caller, stacktrace, target, rotate string
	asJSON                                    bool
	rotateAge, rotateBackups, rotateSize      int
}

func registerLog(fs *pflag.FlagSet) *LogFlags {
	l := &LogFlags{}
	fs.StringVar(&l.level, "log_output_level", "default:info", "log level: debug, info, warn, error or none, optionally per scope (\"default:debug\")")
	fs.BoolVar(&l.asJSON, "log_as_json", false, "log as JSON lines")
	fs.StringVar(&l.caller, "log_caller", "", "scopes whose log lines carry the caller's source position (any value turns it on)")
	fs.StringVar(&l.target, "log_target", "stdout", "comma-separated log destinations: stdout, stderr or file paths")
	fs.StringVar(&l.rotate, "log_rotate", "", "also log to this file (shunt does not rotate it)")
	fs.StringVar(&l.stacktrace, "log_stacktrace_level", "none", "accepted for istio compatibility; shunt logs no stack traces")
	fs.IntVar(&l.rotateAge, "log_rotate_max_age", 30, "accepted for istio compatibility; shunt does not rotate logs")
	fs.IntVar(&l.rotateBackups, "log_rotate_max_backups", 1000, "accepted for istio compatibility; shunt does not rotate logs")
	fs.IntVar(&l.rotateSize, "log_rotate_max_size", 104857600, "accepted for istio compatibility; shunt does not rotate logs")
	return l
}

// CheckLogger checks the log flags without opening anything.
func (s *Set) CheckLogger() error {
	if s.log == nil {
		return nil
	}
	if _, err := parseLevel(s.log.level); err != nil {
		return fmt.Errorf("--log_output_level: %w", err)
	}
	if _, err := parseLevel(s.log.stacktrace); err != nil {
		return fmt.Errorf("--log_stacktrace_level: %w", err)
	}
	return nil
}

// Logger builds the logger the log flags describe. Files it opens stay open
// for the life of the process.
func (s *Set) Logger() (*slog.Logger, error) {
	l := s.log
	if l == nil {
		return slog.Default(), nil
	}
	if err := s.CheckLogger(); err != nil {
		return nil, err
	}
	level, _ := parseLevel(l.level)
	var writers []io.Writer
	targets := strings.Split(l.target, ",")
	if l.rotate != "" {
		targets = append(targets, l.rotate)
	}
	for _, t := range targets {
		switch t = strings.TrimSpace(t); t {
		case "":
		case "stdout":
			writers = append(writers, os.Stdout)
		case "stderr":
			writers = append(writers, os.Stderr)
		default:
			f, err := os.OpenFile(t, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return nil, fmt.Errorf("--log_target: %w", err)
			}
			writers = append(writers, f)
		}
	}
	opts := &slog.HandlerOptions{Level: level, AddSource: l.caller != ""}
	w := io.MultiWriter(writers...)
	if l.asJSON {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// parseLevel reads istio's "scope:level,scope:level" form; shunt has one
// scope, so the "default" scope's level (or a bare level) is the one used.
func parseLevel(s string) (slog.Level, error) {
	level := slog.LevelInfo
	for _, item := range strings.Split(s, ",") {
		scope, lvl, found := strings.Cut(strings.TrimSpace(item), ":")
		if !found {
			lvl, scope = scope, "default"
		}
		var l slog.Level
		switch strings.ToLower(lvl) {
		case "debug":
			l = slog.LevelDebug
		case "info":
			l = slog.LevelInfo
		case "warn", "warning":
			l = slog.LevelWarn
		case "error", "fatal":
			l = slog.LevelError
		case "none":
			l = slog.LevelError + 100
		default:
			return 0, fmt.Errorf("%s is not a log level (debug, info, warn, error, fatal, none)", clip.Quote(lvl))
		}
		if scope == "default" || scope == "all" {
			level = l
		}
	}
	return level, nil
}
