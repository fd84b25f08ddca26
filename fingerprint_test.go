package oboexchange

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// Every field of settings is part of the fingerprint, or notFingerprinted says why not: a setting
// added later and forgotten there would let two different configurations share one cache. Each
// field is changed in turn, and the fingerprint must change with it.
func TestFingerprintCoversEverySetting(t *testing.T) {
	base := fingerprintBase(t)
	typ := reflect.TypeOf(settings{})
	seen := map[string]bool{}
	for i := 0; i < typ.NumField(); i++ {
		name := fieldName(typ.Field(i))
		seen[name] = true
		if reason, ok := notFingerprinted[name]; ok {
			if reason == "" {
				t.Errorf("notFingerprinted[%q] gives no reason", name)
			}
			continue
		}
		s := fingerprintBase(t)
		if !changeField(reflect.ValueOf(s).Elem().Field(i)) {
			t.Errorf("settings.%s: the test cannot change a %s; teach changeField", name, typ.Field(i).Type)
			continue
		}
		if fingerprint(s) == fingerprint(base) {
			t.Errorf("settings.%s is not in the fingerprint: add it, or to notFingerprinted with the reason", name)
		}
	}
	for name := range notFingerprinted {
		if !seen[name] {
			t.Errorf("notFingerprinted names %q, which settings does not have", name)
		}
	}
}

// fingerprintBase is a configuration with most options set, so that each change is to a real value.
func fingerprintBase(t *testing.T) *settings {
	t.Helper()
	c := testConfig("https://idp.example.com/oauth2/token")
	c.ExtraParams = map[string]string{"tenant": "a"}
	s, err := parseConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fieldName is a field's name as written in the source: Yaegi names an interpreted struct's
// unexported fields with a leading X.
func fieldName(f reflect.StructField) string {
	if len(f.Name) > 1 && f.Name[0] == 'X' && f.Name[1] >= 'a' && f.Name[1] <= 'z' {
		return f.Name[1:]
	}
	return f.Name
}

// changeField gives a field another value; it reports false for a type it does not know.
func changeField(f reflect.Value) bool {
	if !f.CanSet() { // compiled: an unexported field is set through its address
		f = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	}
	switch {
	case f.Type() == reflect.TypeOf(&url.URL{}):
		f.Set(reflect.ValueOf(&url.URL{Scheme: "https", Host: "changed.example", Path: "/x"}))
	case f.Kind() == reflect.String:
		f.SetString(f.String() + "changed")
	case f.Kind() == reflect.Bool:
		f.SetBool(!f.Bool())
	case f.Kind() == reflect.Int || f.Kind() == reflect.Int64: // time.Duration too
		f.SetInt(f.Int() + 1)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		f.Set(reflect.Append(f, reflect.ValueOf("changed")))
	case f.Kind() == reflect.Map && f.Type().Key().Kind() == reflect.String && f.Type().Elem().Kind() == reflect.String:
		m := reflect.MakeMap(f.Type())
		for _, k := range f.MapKeys() {
			m.SetMapIndex(k, f.MapIndex(k))
		}
		m.SetMapIndex(reflect.ValueOf("changed"), reflect.ValueOf(strings.Repeat("v", 3)))
		f.Set(m)
	default:
		return false
	}
	return true
}
