package watch

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// upper is a parser that counts its calls and refuses content starting with "bad".
type upper struct{ calls int }

func (u *upper) parse(data []byte) (interface{}, error) {
	u.calls++
	if strings.HasPrefix(string(data), "bad") {
		return nil, errors.New("bad content")
	}
	return strings.ToUpper(string(data)), nil
}

func write(t *testing.T, path, content string, stamp time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, stamp, stamp); err != nil {
		t.Fatal(err)
	}
}

// get reads the file as a string (see secretOf for why in a function of its own).
func get(f *File) (string, error) {
	v, err := f.Get()
	s, _ := v.(string)
	return s, err
}

// Each step writes (or removes) the file, then reads it: the value follows the content, the last
// good value stays when the file goes bad, and parse runs only when the bytes changed.
func TestFileFollowsItsContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	stamp := time.Now().Add(-time.Hour).Truncate(time.Second)
	u := &upper{}
	f := New("someOption", path, u.parse)
	write(t, path, "one", stamp)
	if err := f.Load(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		write     string // "" removes the file
		want      string
		wantErr   string
		wantCalls int
	}{
		{"unchanged", "one", "ONE", "", 1},
		{"rotated", "two", "TWO", "", 2},
		{"same size and time", "owt", "OWT", "", 3},
		{"unparsable: last good kept", "bad!", "OWT", "someOption: " + path + ": bad content", 4},
		{"removed: last good kept", "", "OWT", "someOption: open " + path, 4},
		{"back", "three", "THREE", "", 5},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.write == "" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				write(t, path, st.write, stamp)
			}
			got, err := get(f)
			if got != st.want {
				t.Errorf("value = %q, want %q", got, st.want)
			}
			if st.wantErr == "" && err != nil || st.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), st.wantErr)) {
				t.Errorf("error = %v, want prefix %q", err, st.wantErr)
			}
			if u.calls != st.wantCalls {
				t.Errorf("parse ran %d times, want %d", u.calls, st.wantCalls)
			}
		})
	}
}

// Load reports a missing or unreadable file with the fs error, so the caller can say what to do.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	u := &upper{}
	if err := New("opt", filepath.Join(dir, "missing"), u.parse).Load(); !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "opt: ") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	write(t, bad, "bad", time.Now())
	if err := New("opt", bad, u.parse).Load(); err == nil || err.Error() != "opt: "+bad+": bad content" {
		t.Errorf("unparsable file: %v", err)
	}
}

// Hash is the hash of the content last read successfully, and reading stops at MaxSize.
func TestHashAndBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	u := &upper{}
	f := New("opt", path, u.parse)
	write(t, path, strings.Repeat("a", MaxSize+10), time.Now())
	if err := f.Load(); err != nil {
		t.Fatal(err)
	}
	if f.Hash() != sha256.Sum256([]byte(strings.Repeat("a", MaxSize))) {
		t.Error("the hash is not that of the first MaxSize bytes")
	}
	write(t, path, "bad", time.Now())
	_, _ = f.Get()
	if f.Hash() != sha256.Sum256([]byte(strings.Repeat("a", MaxSize))) {
		t.Error("a bad read changed the hash")
	}
	if f.Path() != path {
		t.Errorf("Path = %q", f.Path())
	}
}

// secretOf runs Secret in a function of its own: under Yaegi v0.16.1 a failed "x, _ := v.(string)"
// inside a loop keeps the value of the previous iteration.
func secretOf(data string) (string, error) {
	v, err := Secret([]byte(data))
	s, _ := v.(string)
	return s, err
}

func TestSecret(t *testing.T) {
	tests := []struct {
		data, want, wantErr string
	}{
		{"s3cret\n", "s3cret", ""},
		{"  with:colon%and+plus \r\n", "with:colon%and+plus", ""},
		{"", "", "the file is empty"},
		{" \n\t", "", "the file is empty"},
	}
	for _, tc := range tests {
		got, err := secretOf(tc.data)
		if got != tc.want || (err == nil) != (tc.wantErr == "") || err != nil && err.Error() != tc.wantErr {
			t.Errorf("Secret(%q) = %q, %v; want %q, %q", tc.data, got, err, tc.want, tc.wantErr)
		}
	}
}
