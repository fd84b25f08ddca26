package main

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// serveForwardAuth is the alternative users deploy today: Traefik's forwardAuth middleware calls a
// small compiled token-exchange service, which answers 200 with the exchanged token in the
// Authorization header (copied to the request by authResponseHeaders). It caches like the plugin
// (SHA-256 of the subject token, read-write lock), so the comparison is of the designs, not of
// the caching.
func serveForwardAuth(addr, tokenEndpoint string) error {
	s := &faService{endpoint: tokenEndpoint, cache: map[[32]byte]faEntry{}, client: &http.Client{Timeout: 10 * time.Second}}
	return http.ListenAndServe(addr, s)
}

type faEntry struct {
	header  string
	expires time.Time
}

type faService struct {
	endpoint string
	client   *http.Client
	mu       sync.RWMutex
	cache    map[[32]byte]faEntry
}

func (s *faService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if len(auth) < 8 || !strings.EqualFold(auth[:7], "Bearer ") {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	token := auth[7:]
	key := sha256.Sum256([]byte(token))
	s.mu.RLock()
	e, ok := s.cache[key]
	s.mu.RUnlock()
	if !ok || time.Now().After(e.expires) {
		var err error
		if e, err = s.exchange(token); err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		s.mu.Lock()
		s.cache[key] = e
		s.mu.Unlock()
	}
	w.Header().Set("Authorization", e.header)
	w.WriteHeader(http.StatusOK)
}

func (s *faService) exchange(token string) (faEntry, error) {
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {token},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"audience":           {"api://orders"},
	}
	req, err := http.NewRequest(http.MethodPost, s.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return faEntry{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("gateway", "s")
	resp, err := s.client.Do(req)
	if err != nil {
		return faEntry{}, err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return faEntry{}, err
	}
	return faEntry{header: "Bearer " + body.AccessToken, expires: time.Now().Add(time.Duration(body.ExpiresIn)*time.Second - 30*time.Second)}, nil
}
