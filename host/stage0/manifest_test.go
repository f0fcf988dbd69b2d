package stage0

import "testing"

func TestAllowsURL(t *testing.T) {
	t.Parallel()
	m := &Manifest{HTTPAllowlist: []string{"https://api.example.com/v1", "http://127.0.0.1:8080"}}
	cases := map[string]bool{
		"https://api.example.com/v1":                   true,
		"https://api.example.com/v1/chat/completions":  true,
		"https://API.example.com/v1/x":                 true,
		"https://api.example.com/v10":                  false,
		"https://api.example.com/v2":                   false,
		"https://api.example.com.evil.net/v1":          false,
		"https://api.example.com@evil.net/v1":          false,
		"https://user@api.example.com/v1":              false,
		"http://api.example.com/v1":                    false,
		"http://127.0.0.1:8080/anything":               true,
		"http://127.0.0.1:8081/":                       false,
		"http://127.0.0.1/":                            false,
		"file:///etc/passwd":                           false,
		"https://api.example.com/v1/../../admin":       false,
		"":                                             false,
		"not a url":                                    false,
		"https://api.example.com/v1%2F..%2F..%2Fadmin": false, // one segment "v1/../../admin", not under /v1/
		"https://api.example.com/v1/./x":               false,
	}
	for u, want := range cases {
		if got := m.AllowsURL(u); got != want {
			t.Errorf("AllowsURL(%q) = %v, want %v", u, got, want)
		}
	}
}
