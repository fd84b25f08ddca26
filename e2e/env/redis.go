package env

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Redis is a real Redis (or Valkey) server on a free loopback port, without persistence: a
// restart empties it, as a cache restarted in a cluster would be.
type Redis struct {
	Addr string // 127.0.0.1:<port>

	bin   string
	port  string
	args  []string
	admin []string // AUTH arguments of the suite's own commands; none when empty
	dir   string
	cmd   *exec.Cmd
	done  chan struct{}
}

// RedisBinary is the server the suite runs: $REDIS_SERVER (make sets it, installing
// redis-server when missing), else valkey-server or redis-server on PATH.
func RedisBinary() (string, error) {
	if bin := os.Getenv("REDIS_SERVER"); bin != "" {
		return bin, nil
	}
	for _, name := range []string{"valkey-server", "redis-server"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", errors.New("no valkey-server or redis-server: run the suite with `make e2e`, which installs one")
}

// StartRedis starts a server with extra arguments (--user, --requirepass...). admin are the
// AUTH arguments the suite's own commands (Do, Entries) use.
func StartRedis(admin []string, args ...string) (*Redis, error) {
	bin, err := RedisBinary()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "oboexchange-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: "127.0.0.1:" + port, bin: bin, port: port, args: args, admin: admin, dir: dir}
	if err := r.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

// Start starts the server (again, after Stop) on its port, and waits until it answers.
func (r *Redis) Start() error {
	args := append([]string{"--bind", "127.0.0.1", "--port", r.port, "--save", "", "--appendonly", "no"}, r.args...)
	r.cmd = exec.Command(r.bin, args...)
	r.cmd.Dir = r.dir
	r.done = make(chan struct{})
	if err := r.cmd.Start(); err != nil {
		return err
	}
	cmd, done := r.cmd, r.done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := r.Do("PING"); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop()
	return fmt.Errorf("%s did not answer on %s", r.bin, r.Addr)
}

// Stop ends the server (SIGTERM, then SIGKILL); Start brings it back, empty.
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		terminate(r.cmd.Process, r.done, 5*time.Second)
		r.cmd = nil
	}
}

// Close stops the server and removes its folder.
func (r *Redis) Close() {
	r.Stop()
	_ = os.RemoveAll(r.dir)
}

// Do sends one command on a connection of its own and returns the reply: a string, nil, an int64,
// or for an array a []interface{}. An error reply is returned as an error.
func (r *Redis) Do(args ...string) (interface{}, error) {
	c, err := net.DialTimeout("tcp", r.Addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	cmds := [][]string{args}
	if len(r.admin) > 0 {
		cmds = [][]string{append([]string{"AUTH"}, r.admin...), args}
	}
	for _, cmd := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	rd := bufio.NewReader(c)
	var reply interface{}
	for range cmds {
		if reply, err = readRESP(rd); err != nil {
			return nil, err
		}
	}
	return reply, nil
}

// Entries returns every key of the server with its value.
func (r *Redis) Entries() (map[string]string, error) {
	out := map[string]string{}
	cursor := "0"
	for {
		reply, err := r.Do("SCAN", cursor, "COUNT", "1000")
		if err != nil {
			return nil, err
		}
		parts, ok := reply.([]interface{})
		if !ok || len(parts) != 2 {
			return nil, fmt.Errorf("SCAN answered %v", reply)
		}
		keys, _ := parts[1].([]interface{})
		for _, k := range keys {
			v, err := r.Do("GET", k.(string))
			if err != nil {
				return nil, err
			}
			s, _ := v.(string)
			out[k.(string)] = s
		}
		if cursor = parts[0].(string); cursor == "0" {
			return out, nil
		}
	}
}

// Int runs a command whose reply is an integer.
func (r *Redis) Int(args ...string) (int64, error) {
	v, err := r.Do(args...)
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("%s answered %v", args[0], v)
	}
	return n, nil
}

func readRESP(rd *bufio.Reader) (interface{}, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, errors.New(line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil, nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(rd, b); err != nil {
			return nil, err
		}
		return string(b[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		out := make([]interface{}, 0, n)
		for i := 0; i < n; i++ {
			v, err := readRESP(rd)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}
