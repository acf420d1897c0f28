package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// RestartMode is how a server is restarted.
type RestartMode string

const (
	// Fast is a clean shutdown (pg_ctl -m fast; mariadb-admin shutdown), then a start.
	Fast RestartMode = "fast"
	// Immediate is a SIGKILL of the server process (a crash; recovery on start), then a start.
	// Under PostgreSQL every process of the server is killed, not only the postmaster, as in
	// a crash of the machine.
	Immediate RestartMode = "immediate"
)

const (
	// readyTimeout bounds how long a start (initialisation excepted) may take to accept
	// connections, and how long a shutdown may take. It is generous: the machine is loaded.
	readyTimeout = 60 * time.Second
	// toolTimeout bounds a helper command: initdb, pg_ctl, mariadb-install-db, mariadb-admin.
	toolTimeout = 2 * time.Minute
	// startAttempts is how many free ports a first start tries before it gives up.
	startAttempts = 5
	// logTail is how many lines of the server's log a failure prints.
	logTail = 40
)

// Server is a private database server, started by StartPostgres or StartMariaDB from the
// installed binaries, in a temporary directory of its own and on a free port, so that the
// chaos suite can restart it without touching the shared servers. Its data directory starts
// as a copy of a template kept in $TMPDIR/chronoforge-chaos-templates (see initData). The
// methods but Restart may be called from any goroutine; Restart, like t.Fatal, from the
// test's goroutine only.
type Server struct {
	kind string // "postgres" or "mysql"
	dir  string // the temporary directory: data, socket, pid file and log
	data string // the data directory, under dir
	log  string // the log file: the server's output and the helper commands'
	port int
	// bin holds the paths of the binaries, by their names (initdb, pg_ctl, postgres;
	// mariadbd, mariadb-install-db, mariadb-admin).
	bin map[string]string
	// cred, when not nil, is the user the PostgreSQL binaries run as (postgres, when the
	// tests run as root, which PostgreSQL refuses).
	cred *syscall.Credential
	run  *process // the running server; nil when it is down
}

// process is one run of a server's main process.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited and err is set
	err    error         // what Wait returned
}

// Kind is "postgres" or "mysql" (a MariaDB server serves the MySQL backend).
func (s *Server) Kind() string { return s.kind }

// Addr is the server's TCP address, "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// DSN is a DSN for the database test of the server, in the form of CHRONOFORGE_POSTGRES_DSN
// or CHRONOFORGE_MYSQL_DSN.
func (s *Server) DSN() string { return s.DSNAt(s.Addr()) }

// DSNAt is DSN dialling addr instead of the server, for a proxy in front of it.
func (s *Server) DSNAt(addr string) string {
	if s.kind == "postgres" {
		return "postgres://postgres@" + addr + "/test?sslmode=disable"
	}
	return "root@tcp(" + addr + ")/test?parseTime=true&multiStatements=false"
}

// StartPostgres starts a private PostgreSQL server with a database test, and registers its
// stop and removal with t.Cleanup. It skips t when the binaries (initdb, pg_ctl, postgres)
// are missing and CHRONOFORGE_REQUIRE_DB is unset; any other failure fails t.
func StartPostgres(t testing.TB) *Server {
	t.Helper()
	return startPostgres(t, freePort)
}

// startPostgres is StartPostgres choosing ports with ports.
func startPostgres(t testing.TB, ports func() (int, error)) *Server {
	t.Helper()
	begun := time.Now()
	bin, err := postgresBinaries()
	if err != nil {
		missing(t, "PostgreSQL", err)
	}
	s := &Server{kind: "postgres", bin: bin}
	if os.Geteuid() == 0 {
		cred, err := userCredential("postgres")
		if err != nil {
			t.Fatalf("private PostgreSQL: running as root, PostgreSQL needs the postgres user: %v", err)
		}
		s.cred = cred
	}
	s.begin(t, "chaos-pg-")
	s.initData(t, "initdb", func(data string) []string {
		return []string{"-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"}
	})
	s.firstStart(t, ports)
	s.createTestDatabase(t, "CREATE DATABASE test")
	t.Logf("private %s server on %s started in %s", s.kind, s.Addr(), time.Since(begun).Round(time.Millisecond))
	return s
}

// StartMariaDB starts a private MariaDB server with a database test, a root user reachable
// over TCP with an empty password, and registers its stop and removal with t.Cleanup. It
// skips t when the binaries (mariadbd, mariadb-install-db, mariadb-admin) are missing and
// CHRONOFORGE_REQUIRE_DB is unset; any other failure fails t.
func StartMariaDB(t testing.TB) *Server {
	t.Helper()
	return startMariaDB(t, freePort)
}

// startMariaDB is StartMariaDB choosing ports with ports.
func startMariaDB(t testing.TB, ports func() (int, error)) *Server {
	t.Helper()
	begun := time.Now()
	bin, err := mariadbBinaries()
	if err != nil {
		missing(t, "MariaDB", err)
	}
	s := &Server{kind: "mysql", bin: bin}
	s.begin(t, "chaos-my-")
	s.initData(t, "mariadb-install-db", func(data string) []string {
		args := []string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		return args
	})
	s.firstStart(t, ports)
	s.createTestDatabase(t, "CREATE DATABASE IF NOT EXISTS test")
	t.Logf("private %s server on %s started in %s", s.kind, s.Addr(), time.Since(begun).Round(time.Millisecond))
	return s
}

// missing skips t, or fails it when CHRONOFORGE_REQUIRE_DB is set, because the binaries of
// a server are not installed.
func missing(t testing.TB, name string, err error) {
	t.Helper()
	if os.Getenv("CHRONOFORGE_REQUIRE_DB") == "" {
		t.Skipf("private %s server: %v (CHRONOFORGE_REQUIRE_DB=1 makes this a failure)", name, err)
	}
	t.Fatalf("private %s server: %v (and CHRONOFORGE_REQUIRE_DB is set)", name, err)
}

// postgresBinaries finds initdb, pg_ctl and postgres in the directory of initdb's real path
// (/usr/local/bin/initdb is a link into /usr/lib/postgresql/15/bin, say), or else in the
// newest /usr/lib/postgresql/*/bin.
func postgresBinaries() (map[string]string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(found, func(i, j int) bool { return pgVersion(found[i]) > pgVersion(found[j]) })
	dirs = append(dirs, found...)
	names := []string{"initdb", "pg_ctl", "postgres"}
	for _, dir := range dirs {
		if bin, err := inDir(dir, names); err == nil {
			return bin, nil
		}
	}
	return nil, fmt.Errorf("no directory holds %s (looked in initdb's directory on PATH and /usr/lib/postgresql/*/bin)", strings.Join(names, ", "))
}

// pgVersion is the major version of a /usr/lib/postgresql/VERSION/bin directory, 0 when it
// is not a number.
func pgVersion(dir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
	return v
}

// inDir returns the paths of the executables names in dir, or an error naming the first
// one missing.
func inDir(dir string, names []string) (map[string]string, error) {
	bin := make(map[string]string)
	for _, name := range names {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%s is not an executable", p)
		}
		bin[name] = p
	}
	return bin, nil
}

// mariadbBinaries finds mariadbd, mariadb-install-db and mariadb-admin on PATH or in the
// directories Debian installs them in (mariadbd is in /usr/sbin, not on every PATH).
func mariadbBinaries() (map[string]string, error) {
	bin := make(map[string]string)
	for _, name := range []string{"mariadbd", "mariadb-install-db", "mariadb-admin"} {
		p, err := exec.LookPath(name)
		if err != nil {
			for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
				if q, err2 := exec.LookPath(filepath.Join(dir, name)); err2 == nil {
					p, err = q, nil
					break
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s is not installed (not on PATH nor in /usr/sbin, /usr/bin)", name)
		}
		bin[name] = p
	}
	return bin, nil
}

// userCredential is the credential of the named user and its primary group.
func userCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %v", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %v", name, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// begin creates the server's temporary directory (owned by the user the server runs as) and
// registers the cleanup: the log's tail when t failed, the server's stop, the directory's
// removal. It is not t.TempDir, whose parent the postgres user may not enter.
func (s *Server) begin(t testing.TB, prefix string) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("private %s server: temporary directory: %v", s.kind, err)
	}
	s.dir, s.data, s.log = dir, filepath.Join(dir, "data"), filepath.Join(dir, "server.log")
	// The one place the log is printed: a t.Fatalf of the server's also fails t.
	t.Cleanup(func() {
		if t.Failed() {
			s.printLog(t)
		}
		s.stop()
		if err := os.RemoveAll(s.dir); err != nil {
			t.Errorf("private %s server: remove %s: %v", s.kind, s.dir, err)
		}
	})
	if s.cred != nil {
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatalf("private %s server: give %s to uid %d: %v", s.kind, dir, s.cred.Uid, err)
		}
	}
}

// initData fills the data directory: with a copy of a template, which the tool (initdb or
// mariadb-install-db, given the data directory to fill by args) made once for all the runs
// of the tests with these binaries, or, when there is no usable template, with the tool
// itself. A copy takes a fraction of a second; the tool takes seconds on a loaded machine.
func (s *Server) initData(t testing.TB, tool string, args func(data string) []string) {
	t.Helper()
	tmpl, err := s.template(tool, args)
	if err == nil {
		if err = copyTree(tmpl, s.data, s.cred); err == nil {
			s.appendLog("--- chaos: data directory copied from the template " + tmpl)
			return
		}
		os.RemoveAll(s.data)
	}
	s.appendLog(fmt.Sprintf("--- chaos: no template (%v); running %s", err, tool))
	s.tool(t, s.bin[tool], args(s.data)...)
}

// templateRoot is the directory of the templates of data directories, under os.TempDir.
const templateRoot = "chronoforge-chaos-templates"

// template returns the template of the data directory that the tool, run with args, makes,
// making it when it does not exist. A template is named by a hash of the binaries (their
// paths, sizes and times), the arguments and the user, so that an upgrade makes a new one;
// it is made aside and renamed into place whole, so that a test running at the same time
// sees it whole or not at all. It is never changed once in place.
func (s *Server) template(tool string, args func(data string) []string) (string, error) {
	root := filepath.Join(os.TempDir(), templateRoot)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	// Another user's directory could hold anything: use only our own.
	fi, err := os.Stat(root)
	if err != nil {
		return "", err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("%s is not the directory of this user alone", root)
	}
	key, err := s.templateKey(args("DATA"))
	if err != nil {
		return "", err
	}
	final := filepath.Join(root, s.kind+"-"+key)
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, nil
	}
	build, err := os.MkdirTemp(root, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(build)
	if s.cred != nil {
		if err := os.Chown(build, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return "", err
		}
	}
	data := filepath.Join(build, "data")
	if err := s.runTool(s.bin[tool], args(data)...); err != nil {
		return "", err
	}
	if err := os.Rename(data, final); err != nil {
		if fi, err2 := os.Stat(final); err2 == nil && fi.IsDir() {
			return final, nil // another test made it first
		}
		return "", err
	}
	return final, nil
}

// templateKey hashes what a template depends on: the binaries, the arguments of the tool
// that makes it and the user.
func (s *Server) templateKey(args []string) (string, error) {
	names := make([]string, 0, len(s.bin))
	for name := range s.bin {
		names = append(names, name)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		fi, err := os.Stat(s.bin[name])
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d %d\n", s.bin[name], fi.Size(), fi.ModTime().UnixNano())
	}
	fmt.Fprintf(h, "%q %d\n", args, os.Geteuid())
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// copyTree copies the directory src, which holds only directories and regular files, to dst
// (which must not exist), with the same permissions, owned by cred when it is not nil.
func copyTree(src, dst string, cred *syscall.Credential) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			err = os.Mkdir(target, 0o700)
		case d.Type().IsRegular():
			err = copyFile(path, target)
		default:
			err = fmt.Errorf("%s is neither a file nor a directory", path)
		}
		if err == nil {
			err = os.Chmod(target, info.Mode().Perm())
		}
		if err == nil && cred != nil {
			err = os.Lchown(target, int(cred.Uid), int(cred.Gid))
		}
		return err
	})
}

// copyFile copies the regular file src to the new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// tool runs a helper command to its end as the server's user, appending its command line
// and output to the log; it fails t when the command fails.
func (s *Server) tool(t testing.TB, path string, args ...string) {
	t.Helper()
	if err := s.runTool(path, args...); err != nil {
		t.Fatalf("private %s server: %v", s.kind, err)
	}
}

// runTool runs a helper command to its end as the server's user, appending its command line
// and output to the log.
func (s *Server) runTool(path string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	out, err := cmd.CombinedOutput()
	s.appendLog(fmt.Sprintf("$ %s %s\n%s", filepath.Base(path), strings.Join(args, " "), out))
	if err != nil {
		return fmt.Errorf("%s %s: %v (output in the log)", filepath.Base(path), strings.Join(args, " "), err)
	}
	return nil
}

// appendLog appends text to the log, best effort: the log only helps a failure's reader.
func (s *Server) appendLog(text string) {
	f, err := os.OpenFile(s.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	f.WriteString(text)
}

// printLog logs the last lines of the server's log.
func (s *Server) printLog(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Logf("private %s server: log %s: %v", s.kind, s.log, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTail {
		lines = lines[len(lines)-logTail:]
	}
	t.Logf("private %s server on %s, last lines of %s:\n%s", s.kind, s.Addr(), s.log, strings.Join(lines, "\n"))
}

// firstStart starts the server on a port of ports (freePort but in tests), trying another
// one when the server could not bind it: the port was taken between its choice and the bind.
func (s *Server) firstStart(t testing.TB, ports func() (int, error)) {
	t.Helper()
	var err error
	for attempt := 0; attempt < startAttempts; attempt++ {
		if s.port, err = ports(); err != nil {
			t.Fatalf("private %s server: %v", s.kind, err)
		}
		var clash bool
		if clash, err = s.start(); err == nil {
			return
		}
		if !clash {
			break
		}
		t.Logf("private %s server: port %d is taken; trying another", s.kind, s.port)
	}
	t.Fatalf("private %s server: %v", s.kind, err)
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago. It prefers a port
// below the kernel's ephemeral range, which the outgoing connections of the tests cannot
// take while the server is down for a restart.
func freePort() (int, error) {
	if lo := ephemeralLow(); lo > lowestPort {
		for range 20 {
			port := lowestPort + rand.IntN(lo-lowestPort)
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				l.Close()
				return port, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lowestPort is the lowest port freePort picks below the ephemeral range.
const lowestPort = 20000

// ephemeralLow is the first port of the kernel's ephemeral range, 0 when unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	lo, _ := strconv.Atoi(fields[0])
	return lo
}

// start starts the server's process on s.port and waits until it accepts connections. When
// it fails, clash reports whether the server could not bind its port.
func (s *Server) start() (clash bool, err error) {
	mark := logSize(s.log)
	run, err := s.launch()
	if err != nil {
		return false, err
	}
	s.run = run
	if err := s.waitReady(); err != nil {
		s.kill()
		return bindFailed(s.log, mark), err
	}
	return false, nil
}

// logSize is the size of the log file, 0 when it does not exist.
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// bindFailed reports whether the log, from offset on, says the port was in use.
func bindFailed(path string, offset int64) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return bytes.Contains(b[offset:], []byte("already in use"))
}

// launch starts the server's main process, its output appended to the log.
func (s *Server) launch() (*process, error) {
	var path string
	var args []string
	switch s.kind {
	case "postgres":
		path = s.bin["postgres"]
		args = []string{"-D", s.data, "-p", strconv.Itoa(s.port), "-k", s.dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "shared_buffers=32MB",
			"-c", "fsync=on", // an Immediate restart must find every commit
			"-c", "logging_collector=off"}
	default:
		path = s.bin["mariadbd"]
		args = []string{"--no-defaults",
			"--datadir=" + s.data,
			"--port=" + strconv.Itoa(s.port),
			"--socket=" + filepath.Join(s.dir, "mysqld.sock"),
			"--pid-file=" + filepath.Join(s.dir, "mysqld.pid"),
			"--tmpdir=" + s.dir,
			"--log-error=" + s.log,
			"--bind-address=127.0.0.1",
			"--skip-networking=0",
			"--skip-name-resolve",
			"--innodb-buffer-pool-size=32M"}
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
	}
	logf, err := os.OpenFile(s.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the log: %v", err)
	}
	defer logf.Close() // the process has its own descriptor
	fmt.Fprintf(logf, "$ %s %s\n", filepath.Base(path), strings.Join(args, " "))
	cmd := exec.Command(path, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		Setpgid:    true,            // signals to the test's process group do not reach it
		Pdeathsig:  syscall.SIGKILL, // nor does it outlive a test binary killed by a timeout
	}
	if err := spawn(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %v", path, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// spawnRequests carries the processes to start to the spawner.
var (
	spawnOnce     sync.Once
	spawnRequests = make(chan spawnRequest)
)

// spawnRequest asks the spawner to start cmd and send Start's error on done.
type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// spawn starts cmd from the spawner's thread. A parent-death signal (Pdeathsig) is sent
// when the thread that started the child exits, not the process; the spawner's thread
// never exits, so the signal comes only when the test binary dies.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() { go spawner() })
	req := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	spawnRequests <- req
	return <-req.done
}

// spawner starts the processes asked for, from a thread of its own that it never gives back.
func spawner() {
	runtime.LockOSThread() // never unlocked: the thread lives as long as the process
	for req := range spawnRequests {
		req.done <- req.cmd.Start()
	}
}

// waitReady waits until the server accepts connections and answers a query, or its process
// exits, or readyTimeout passes.
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var last error
	for {
		select {
		case <-s.run.exited:
			return fmt.Errorf("the server exited before it accepted connections on %s: %v", s.Addr(), s.run.err)
		default:
		}
		if last = s.ping(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the server did not accept connections on %s within %s: %v", s.Addr(), readyTimeout, last)
		case <-s.run.exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ping connects to the server (its maintenance database: test may not exist yet) and
// queries it once.
func (s *Server) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s.kind == "postgres" {
		conn, err := pgx.Connect(ctx, "postgres://postgres@"+s.Addr()+"/postgres?sslmode=disable&connect_timeout=5")
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, "SELECT 1")
		return err
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "tcp", s.Addr()
	cfg.Timeout = 5 * time.Second
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	return db.PingContext(ctx)
}

// createTestDatabase runs stmt, which creates the database test, on the server.
func (s *Server) createTestDatabase(t testing.TB, stmt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var err error
	if s.kind == "postgres" {
		var conn *pgx.Conn
		if conn, err = pgx.Connect(ctx, "postgres://postgres@"+s.Addr()+"/postgres?sslmode=disable"); err == nil {
			_, err = conn.Exec(ctx, stmt)
			conn.Close(context.Background())
		}
	} else {
		cfg := mysql.NewConfig()
		cfg.User, cfg.Net, cfg.Addr = "root", "tcp", s.Addr()
		var connector driver.Connector
		if connector, err = mysql.NewConnector(cfg); err == nil {
			db := sql.OpenDB(connector)
			_, err = db.ExecContext(ctx, stmt)
			db.Close()
		}
	}
	if err != nil {
		t.Fatalf("private %s server on %s: %s: %v", s.kind, s.Addr(), stmt, err)
	}
}

// Restart stops the server by mode, leaves it down for down, starts it on the same port
// and data, and returns once it accepts connections again. Connections open across it fail
// on their next use. It fails t when the server does not stop or start; call it from the
// test's goroutine.
func (s *Server) Restart(t testing.TB, mode RestartMode, down time.Duration) {
	t.Helper()
	if s.run == nil {
		t.Fatalf("private %s server on %s: Restart: the server is not running", s.kind, s.Addr())
	}
	begun := time.Now()
	var err error
	switch mode {
	case Fast:
		err = s.shutdown()
	case Immediate:
		err = s.crash()
	default:
		t.Fatalf("private %s server: Restart: unknown mode %q (Fast or Immediate)", s.kind, mode)
	}
	if err != nil {
		t.Fatalf("private %s server on %s: %s stop: %v", s.kind, s.Addr(), mode, err)
	}
	stopped := time.Now()
	time.Sleep(down)
	s.appendLog(fmt.Sprintf("--- chaos: %s restart, down %s", mode, down))
	started := time.Now()
	for {
		clash, err := s.start()
		if err == nil {
			break
		}
		// Its port, taken while it was down, may be given back: retry for a while.
		if !clash || time.Since(started) > readyTimeout {
			t.Fatalf("private %s server on %s: start after a %s stop: %v", s.kind, s.Addr(), mode, err)
		}
		s.appendLog("--- chaos: the port is taken; retrying")
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("private %s server on %s: %s restart: stop %s, down %s, start %s", s.kind, s.Addr(), mode,
		stopped.Sub(begun).Round(time.Millisecond), down, time.Since(started).Round(time.Millisecond))
}

// shutdown stops the server cleanly (pg_ctl -m fast; mariadb-admin shutdown) and waits for
// its process to exit.
func (s *Server) shutdown() error {
	var err error
	if s.kind == "postgres" {
		err = s.runTool(s.bin["pg_ctl"], "-D", s.data, "-m", "fast", "-w", "-t", strconv.Itoa(int(readyTimeout/time.Second)), "stop")
	} else {
		err = s.runTool(s.bin["mariadb-admin"], "--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", strconv.Itoa(s.port), "-u", "root", "shutdown")
	}
	if err != nil {
		s.kill()
		return err
	}
	return s.waitExit()
}

// crash kills the server with SIGKILL: under PostgreSQL the postmaster and every process it
// started (they would otherwise hold its shared memory, and the next postmaster would
// refuse to start), under MariaDB its one process. It waits until they are gone.
func (s *Server) crash() error {
	pid := s.run.cmd.Process.Pid
	// Stopped, the postmaster starts no process while its children are listed and killed.
	syscall.Kill(pid, syscall.SIGSTOP)
	kids := children(pid)
	for _, kid := range kids {
		syscall.Kill(kid, syscall.SIGKILL)
	}
	syscall.Kill(-pid, syscall.SIGKILL) // the process group: the server and what stayed in it
	if err := s.waitExit(); err != nil {
		return err
	}
	return waitGone(kids)
}

// waitExit waits for the server's process to exit, for readyTimeout at most.
func (s *Server) waitExit() error {
	defer func() { s.run = nil }()
	select {
	case <-s.run.exited:
		return nil
	case <-time.After(readyTimeout):
		pid := s.run.cmd.Process.Pid
		syscall.Kill(-pid, syscall.SIGKILL)
		<-s.run.exited
		return fmt.Errorf("the server (pid %d) did not exit within %s; killed", pid, readyTimeout)
	}
}

// kill kills the server's process group, if it runs, and waits for its process to exit.
func (s *Server) kill() {
	if s.run == nil {
		return
	}
	syscall.Kill(-s.run.cmd.Process.Pid, syscall.SIGKILL)
	<-s.run.exited
	s.run = nil
}

// stop stops the server at the end of its test. PostgreSQL gets SIGQUIT, an immediate
// shutdown in which the postmaster ends its children and frees its shared memory (which
// SIGKILL would leak); MariaDB is killed.
func (s *Server) stop() {
	if s.run == nil {
		return
	}
	if s.kind == "postgres" {
		syscall.Kill(s.run.cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-s.run.exited:
			s.run = nil
			return
		case <-time.After(readyTimeout):
		}
	}
	s.kill()
}

// children lists the processes whose parent is pid, from /proc.
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(p); ok && ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

// procStat reads the parent and the state of process pid from /proc/pid/stat; ok is false
// when the process is gone.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses, so split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, false
	}
	return ppid, fields[0][0], true
}

// waitGone waits until every process of pids is gone or a zombie (a zombie holds no memory
// and no socket), for readyTimeout at most.
func waitGone(pids []int) error {
	deadline := time.Now().Add(readyTimeout)
	for _, pid := range pids {
		for {
			_, state, ok := procStat(pid)
			if !ok || state == 'Z' || state == 'X' {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("process " + strconv.Itoa(pid) + " of the killed server is still alive")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}
