package router

import (
	"encoding/json"
	"testing"
)

// FuzzParseRoute: a route entry from the KV bucket never panics the
// router, and a parsed route survives encode and parse unchanged.
func FuzzParseRoute(f *testing.F) {
	f.Add("checkout-42", []byte(`{"rollout":"checkout-42","baseline":"v41","canary":"v42","weight":5,"state":"progressing","step":1,"seq":7}`))
	f.Add("a", []byte(`{"weight":100,"state":"completed"}`))
	f.Add("a", []byte(`{"weight":-1}`))
	f.Add("a", []byte(`{"rollout":"b"}`))
	f.Add("a", []byte(`not json`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		r, err := ParseRoute(key, data)
		if err != nil {
			return
		}
		if !(r.Weight >= 0 && r.Weight <= 100) || r.Rollout != key {
			t.Fatalf("ParseRoute(%q, %q) = %+v: accepted an invalid route", key, data, r)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRoute(key, b)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v -> %s -> %+v, %v", r, b, r2, err)
		}
		_ = r.Assign("user-1")
	})
}
