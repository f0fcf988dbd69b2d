package ledger

import (
	"fmt"
	"unicode/utf8"
)

// Kind says what a principal is, which decides what RLS lets it do.
type Kind string

const (
	// KindUser is a person (API token, CLI): reads its tenant's tenant-visible
	// spans and its own private ones, writes only as itself.
	KindUser Kind = "user"
	// KindService is a tenant's kernels: reads and writes anything in its
	// tenant, on behalf of any owner there.
	KindService Kind = "service"
	// KindSystem is the host reading across tenants (verify, engine
	// discovery). It cannot write.
	KindSystem Kind = "system"
)

// Principal is who a transaction acts as. It always comes from
// authentication (a token, the CLI's flags, a kernel's boot context), never
// from a request body.
type Principal struct {
	Tenant string
	User   string
	Kind   Kind
}

// User is a person in a tenant.
func User(tenant, user string) Principal {
	return Principal{Tenant: tenant, User: user, Kind: KindUser}
}

// Service is the service principal of a tenant, the identity its kernels
// write with.
func Service(tenant, user string) Principal {
	return Principal{Tenant: tenant, User: user, Kind: KindService}
}

// System reads everything and writes nothing.
func System() Principal { return Principal{User: "system", Kind: KindSystem} }

// Validate checks the principal is complete.
func (p Principal) Validate() error {
	switch p.Kind {
	case KindUser, KindService:
		if err := checkName("tenant", p.Tenant); err != nil {
			return err
		}
		return checkName("user", p.User)
	case KindSystem:
		return nil
	default:
		return fmt.Errorf("%w: unknown principal kind %q", ErrBadPrincipal, p.Kind)
	}
}

func (p Principal) String() string {
	if p.Kind == KindSystem {
		return "system"
	}
	return fmt.Sprintf("%s %s/%s", p.Kind, p.Tenant, p.User)
}

func checkName(what, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s is required", ErrBadPrincipal, what)
	}
	if len(v) > 256 || !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s must be valid UTF-8 of at most 256 bytes", ErrBadPrincipal, what)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s must not contain control characters", ErrBadPrincipal, what)
		}
	}
	return nil
}
