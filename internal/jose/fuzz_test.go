package jose

import "testing"

// Expiry reads hostile input (any bearer token): it must never panic, and an exp it returns is a
// usable time. The seed corpus is in testdata/fuzz/; `make fuzz` runs it for a fixed number of
// inputs.
func FuzzExpiry(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIn0.eyJleHAiOjE5MDAwMDAwMDB9.c2ln")
	f.Add("a.eyJleHAiOjFlMzAwfQ.c")
	f.Add("a..c")
	f.Fuzz(func(t *testing.T, token string) {
		exp, ok := Expiry(token)
		if ok && (exp.Year() < 1970 || exp.Year() > 9999) {
			t.Fatalf("exp out of range: %v", exp)
		}
	})
}
