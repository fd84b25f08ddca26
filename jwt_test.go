package oboexchange

import "testing"

func TestJWTExpiry(t *testing.T) {
	tests := []struct {
		name  string
		token string
		exp   int64 // 0: none
	}{
		{"exp", testJWT(map[string]interface{}{"exp": 1900000000}), 1900000000},
		{"fractional exp", testJWT(map[string]interface{}{"exp": 1900000000.7}), 1900000000},
		{"no exp", testJWT(map[string]interface{}{"sub": "u"}), 0},
		{"exp as string", testJWT(map[string]interface{}{"exp": "1900000000"}), 0},
		{"negative exp", testJWT(map[string]interface{}{"exp": -5}), 0},
		{"exp past year 9999", testJWT(map[string]interface{}{"exp": 1e20}), 0},
		{"opaque", "opaque-token", 0},
		{"two parts", "a.b", 0},
		{"four parts", "a.b.c.d", 0},
		{"payload not base64", "a.!!!.c", 0},
		{"payload not json", "a." + "bm90IGpzb24" + ".c", 0},
		{"handmade payload", "a.eyJleHAiOjE5MDAwMDAwMDB9.c", 1900000000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp, ok := jwtExpiry(tc.token)
			if tc.exp == 0 {
				if ok {
					t.Errorf("exp %v, want none", exp)
				}
				return
			}
			if !ok || exp.Unix() != tc.exp {
				t.Errorf("exp %v ok %v, want %d", exp.Unix(), ok, tc.exp)
			}
		})
	}
}
