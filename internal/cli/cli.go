// Package cli implements cdc-relay's subcommands. Each subcommand lives in its own cmd_*.go file
// and registers itself; this file holds the dispatcher and the flags every subcommand shares.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cdc-relay/cdc-relay/internal/safetext"
)

// ErrUsage marks an error in the command line; Main prints the usage and exits 2.
var ErrUsage = errors.New("usage")

// Env is what a subcommand may touch of its process, so tests can run commands in-process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// StdEnv returns the process's real environment.
func StdEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Command is one subcommand.
type Command struct {
	Name    string
	Summary string
	// Run parses args with its own FlagSet and does the work. A returned error wrapping
	// ErrUsage exits 2; any other error exits 1.
	Run func(ctx context.Context, env Env, args []string) error
}

var commands = map[string]*Command{}

func register(c *Command) { commands[c.Name] = c }

// Main runs the subcommand named by args[0] and returns the process exit code.
func Main(args []string, env Env) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(env.Stdout)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "cdc-relay: unknown command %q\n\n", args[0])
		usage(env.Stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.Run(ctx, env, args[1:])
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(env.Stderr, "cdc-relay %s: %v\n", cmd.Name, err)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "cdc-relay %s: %v\n", cmd.Name, err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "cdc-relay: deliver CE Data Sync queues to a receiver over authenticated HTTPS.")
	fmt.Fprintln(w, "\nUsage: cdc-relay COMMAND [flags]   (cdc-relay COMMAND -h for its flags)\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].Summary)
	}
}

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func newFlagSet(env Env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("cdc-relay "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

// parse parses args and refuses stray positional arguments beyond max.
func parse(fs *flag.FlagSet, args []string, maxArgs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if e, ok := f.Value.(*envFallback); ok {
			e.resolve()
		}
	})
	if fs.NArg() > maxArgs {
		return fmt.Errorf("%w: unexpected arguments: %s", ErrUsage, strings.Join(fs.Args()[maxArgs:], " "))
	}
	return nil
}

// cleanError prints an error that carries outside text (a receiver's answer, a server's
// message) through safetext.Clean, keeping the error chain for errors.Is and errors.As.
type cleanError struct{ err error }

func (e cleanError) Error() string { return safetext.Clean(e.err.Error()) }
func (e cleanError) Unwrap() error { return e.err }

// databaseFlag registers --database-url, defaulting to $DATABASE_URL. The URL usually carries a
// password, so the environment is read only once the flags are parsed (by parse): the flag's
// default stays empty and -h or a mistyped flag, which print every default, cannot show it.
func databaseFlag(fs *flag.FlagSet, env Env) *string {
	e := &envFallback{val: new(string), name: "DATABASE_URL", getenv: env.Getenv}
	fs.Var(e, "database-url", "PostgreSQL `URL` of the CE database (default $DATABASE_URL)")
	return e.val
}

// envFallback is a string flag whose default is an environment variable read after parsing;
// its registered default is empty, so usage never prints the variable's value.
type envFallback struct {
	val    *string
	name   string
	getenv func(string) string
	set    bool
}

func (e *envFallback) String() string {
	if e == nil || e.val == nil || !e.set {
		return ""
	}
	return *e.val
}

func (e *envFallback) Set(s string) error {
	*e.val, e.set = s, true
	return nil
}

// resolve fills the value from the environment when the flag was not given.
func (e *envFallback) resolve() {
	if !e.set && e.getenv != nil {
		*e.val = e.getenv(e.name)
	}
}

// requireDatabase returns a usage error naming the fix when no database URL was given.
func requireDatabase(url string) error {
	if url == "" {
		return fmt.Errorf("%w: no database: pass --database-url postgres://user@host/db or set DATABASE_URL", ErrUsage)
	}
	return nil
}

// logFlags registers --log-format and --log-level and returns a constructor for the logger.
func logFlags(fs *flag.FlagSet, env Env) func() (*zap.Logger, error) {
	format := fs.String("log-format", "json", "log format: json or console")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	return func() (*zap.Logger, error) {
		return newLogger(env.Stderr, *format, *level)
	}
}

func newLogger(w io.Writer, format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: use debug, info, warn or error", ErrUsage, level)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("%w: --log-format %q: use json or console", ErrUsage, format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}
