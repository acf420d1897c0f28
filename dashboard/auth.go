package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
)

// equal compares secrets in constant time, lengths included (it compares their hashes).
func equal(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// BasicAuth protects the dashboard with HTTP basic authentication: one user and password,
// compared in constant time. The principal logged for actions is the user.
func BasicAuth(user, password string) Option {
	return func(c *config) error {
		if user == "" || password == "" {
			return errors.New("dashboard: BasicAuth needs a non-empty user and password")
		}
		return c.setAuth(`Basic realm="chronoforge", charset="UTF-8"`, func(r *http.Request) (string, bool, bool) {
			u, p, ok := r.BasicAuth()
			if !ok {
				return "", false, false
			}
			uok, pok := equal(u, user), equal(p, password) // both, always: no early exit
			if !uok || !pok {
				return "", false, false
			}
			return u, true, true
		})
	}
}

// BearerToken protects the dashboard with a static bearer token (Authorization: Bearer
// TOKEN), compared in constant time. The principal logged for actions is "bearer".
func BearerToken(token string) Option {
	return func(c *config) error {
		if token == "" {
			return errors.New("dashboard: BearerToken needs a non-empty token")
		}
		return c.setAuth(`Bearer realm="chronoforge"`, func(r *http.Request) (string, bool, bool) {
			h := r.Header.Get("Authorization")
			got, ok := strings.CutPrefix(h, "Bearer ")
			if !ok || !equal(got, token) {
				return "", false, false
			}
			return "bearer", true, true
		})
	}
}

// AuthFunc authenticates each request with f, which returns the principal (logged with every
// action), whether it may act (canWrite false shows the dashboard read-only to it) and ok
// false to refuse the request with 401.
func AuthFunc(f func(*http.Request) (principal string, canWrite bool, ok bool)) Option {
	return func(c *config) error {
		if f == nil {
			return errors.New("dashboard: AuthFunc needs a non-nil function")
		}
		return c.setAuth("", f)
	}
}

// InsecureNoAuth serves the dashboard to anyone who reaches it, for a handler mounted behind
// an authenticating proxy or on a private listener. It must be given explicitly: New refuses
// to start without an authenticator otherwise.
func InsecureNoAuth() Option {
	return func(c *config) error { c.insecure = true; return nil }
}

func (c *config) setAuth(scheme string, f authFunc) error {
	if c.auth != nil {
		return errors.New("dashboard: more than one authenticator given (BasicAuth, BearerToken, AuthFunc): give one")
	}
	c.auth = f
	c.authScheme = scheme
	return nil
}

type userKey struct{}

// user is who asks, as the authenticator said.
type user struct {
	principal string
	canWrite  bool
}

func (d *dash) authenticate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := user{principal: "anonymous", canWrite: true}
		if d.cfg.auth != nil {
			p, cw, ok := d.cfg.auth(r)
			if !ok {
				if d.cfg.authScheme != "" {
					w.Header().Set("WWW-Authenticate", d.cfg.authScheme)
				}
				http.Error(w, "401 unauthorized: credentials missing or wrong", http.StatusUnauthorized)
				return
			}
			u = user{principal: p, canWrite: cw}
		}
		if d.cfg.readOnly {
			u.canWrite = false
		}
		h.ServeHTTP(w, r.WithContext(withUser(r.Context(), u)))
	})
}

func withUser(ctx context.Context, u user) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

func userOf(r *http.Request) user {
	u, _ := r.Context().Value(userKey{}).(user)
	return u
}
