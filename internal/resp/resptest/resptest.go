// Package resptest starts Redis servers for tests: a real redis-server (or valkey-server) on a
// free loopback port, and fake servers for the failures a real one does not make on demand
// (garbage, silence, a connection closed at once). It also gives the tests a view of a server of
// their own, apart from the client under test. It imports the standard library only, so that the
// tests using it run under Yaegi too.
package resptest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Binary is the Redis or Valkey server the tests start: $REDIS_SERVER, else valkey-server or
// redis-server on PATH. The tests that need it skip only when there is none and REDIS_SERVER is
// unset; make sets it, so under `make test` they always run.
func Binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("REDIS_SERVER"); bin != "" {
		return bin
	}
	// os/exec is not among Yaegi's packages: the PATH is searched by hand, and the server started
	// with os.StartProcess.
	for _, name := range []string{"valkey-server", "redis-server"} {
		for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
			path := filepath.Join(dir, name)
			if info, err := os.Stat(path); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
				return path
			}
		}
	}
	t.Skip("no valkey-server or redis-server on PATH and REDIS_SERVER unset (`make unit` installs one)")
	return ""
}

// Server is a real Redis (or Valkey) on a free loopback port, stopped when the test ends.
type Server struct {
	Port string

	bin  string
	args []string
	proc *os.Process
	done chan struct{}
}

// Start starts a server with extra arguments (--requirepass, --user, --tls-port...); with
// --tls-port among them, its port is the TLS one.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{bin: Binary(t), Port: FreePort(t), args: args}
	s.start(t)
	t.Cleanup(func() { s.Stop() })
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + s.Port }

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

func (s *Server) start(t testing.TB) {
	t.Helper()
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--port", s.Port}
	for i, a := range s.args {
		if a == "--tls-port" {
			args[len(args)-1] = "0"
			s.args[i+1] = s.Port
		}
	}
	argv := append(append([]string{s.bin}, args...), s.args...)
	proc, err := os.StartProcess(s.bin, argv, &os.ProcAttr{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	s.proc, s.done = proc, done
	go func() {
		_, _ = proc.Wait()
		close(done)
	}()
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("tcp", s.Addr()); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s", s.bin, s.Addr())
}

// Stop kills the server (the tests need no graceful shutdown: nothing is saved).
func (s *Server) Stop() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.done
	s.proc = nil
}

// Restart stops the server and starts it again on the same port, empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}

// FreePort returns a loopback port nobody listens on now.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// ErrorReply is an error reply, as Do returns it.
type ErrorReply string

// Do is the test's own view of a server: one command on a connection of its own, after AUTH when
// auth is given. It returns a []byte, nil, an ErrorReply, or for an array the []interface{} of its
// elements.
func Do(t testing.TB, addr string, auth []string, args ...string) interface{} {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	cmd := Command(args...)
	if len(auth) > 0 {
		cmd = Command(append([]string{"AUTH"}, auth...)...) + cmd
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(c)
	if len(auth) > 0 {
		if v, err := Read(rd); err != nil {
			t.Fatalf("AUTH: %v", err)
		} else if e, ok := v.(ErrorReply); ok {
			t.Fatalf("AUTH: %s", e)
		}
	}
	v, err := Read(rd)
	if err != nil {
		t.Fatalf("%s: %v", args[0], err)
	}
	return v
}

// Command encodes a command as RESP, as a client sends it.
func Command(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// Read reads one reply of any type (see Do) or one command a client sent (an array).
func Read(rd *bufio.Reader) (interface{}, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty line")
	}
	n, _ := strconv.Atoi(line[1:])
	switch line[0] {
	case '+', ':':
		return []byte(line[1:]), nil
	case '-':
		return ErrorReply(line[1:]), nil
	case '$':
		if n < 0 {
			return nil, nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(rd, b); err != nil {
			return nil, err
		}
		return b[:n], nil
	case '*':
		out := []interface{}{}
		for i := 0; i < n; i++ {
			v, err := Read(rd)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply %q", line)
}

// ReadCommand reads one command a client sent to a fake server.
func ReadCommand(rd *bufio.Reader) ([]string, error) {
	v, err := Read(rd)
	if err != nil {
		return nil, err
	}
	parts, ok := v.([]interface{})
	if !ok {
		return nil, errors.New("not a command")
	}
	var args []string
	for _, p := range parts {
		b, _ := p.([]byte)
		args = append(args, string(b))
	}
	return args, nil
}

// Entries returns every key of the server with its value.
func Entries(t testing.TB, addr string, auth ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	keys, _ := Do(t, addr, auth, "KEYS", "*").([]interface{})
	for _, k := range keys {
		name := string(k.([]byte))
		v, _ := Do(t, addr, auth, "GET", name).([]byte)
		out[name] = v
	}
	return out
}

// WaitForKeys waits until the server holds n keys (the shared cache writes in the background).
func WaitForKeys(t testing.TB, addr string, n int) {
	t.Helper()
	for i := 0; i < 400; i++ {
		keys, _ := Do(t, addr, nil, "KEYS", "*").([]interface{})
		if len(keys) == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the server does not hold %d keys", n)
}

// Fake is a server that answers each connection with serve.
type Fake struct {
	ln    net.Listener
	conns atomic.Int32
}

// StartFake listens on a free loopback port until the test ends.
func StartFake(t testing.TB, serve func(c net.Conn, rd *bufio.Reader)) *Fake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Fake{ln: ln}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return f
}

// URL is the fake's redis:// URL.
func (f *Fake) URL() string { return "redis://" + f.ln.Addr().String() + "/0" }

// Addr is the fake's host:port.
func (f *Fake) Addr() string { return f.ln.Addr().String() }

// Conns is how many connections the fake accepted.
func (f *Fake) Conns() int { return int(f.conns.Load()) }

// AnswerThenWait is a fake server's behaviour: it reads one command, writes raw, then holds the
// connection open until the client closes it.
func AnswerThenWait(raw string) func(c net.Conn, rd *bufio.Reader) {
	return func(c net.Conn, rd *bufio.Reader) {
		_, _ = ReadCommand(rd)
		_, _ = c.Write([]byte(raw))
		_, _ = rd.ReadByte()
	}
}
