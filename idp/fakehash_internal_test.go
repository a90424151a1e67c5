package idp

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// recordingBcrypt is the default comparer, recording every hash that a
// password is compared against.
type recordingBcrypt struct {
	BcryptComparer
	mu  sync.Mutex
	got [][]byte
}

func (c *recordingBcrypt) Compare(hashed, plaintext []byte) (bool, error) {
	c.mu.Lock()
	c.got = append(c.got, hashed)
	c.mu.Unlock()
	return c.BcryptComparer.Compare(hashed, plaintext)
}

// last returns the hash of the last comparison.
func (c *recordingBcrypt) last() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[len(c.got)-1]
}

// classComparer stands for a comparer of several algorithms and costs
// without computing any: a hash is "cls$<cost>$<password>", and its cost
// is <cost>.
type classComparer struct {
	mu    sync.Mutex
	got   []string
	fakes int // FakeHash calls
}

func (c *classComparer) Compare(hashed, plaintext []byte) (bool, error) {
	c.mu.Lock()
	c.got = append(c.got, string(hashed))
	c.mu.Unlock()
	parts := strings.SplitN(string(hashed), "$", 3)
	return len(parts) == 3 && parts[2] == string(plaintext), nil
}

func (c *classComparer) HashCost(hashed []byte) (string, error) {
	parts := strings.SplitN(string(hashed), "$", 3)
	if len(parts) != 3 || parts[0] != "cls" {
		return "", fmt.Errorf("not a cls hash")
	}
	return parts[1], nil
}

func (c *classComparer) FakeHash(hashed []byte) ([]byte, error) {
	cost, err := c.HashCost(hashed)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.fakes++
	c.mu.Unlock()
	return []byte("cls$" + cost + "$\x00fake"), nil
}

func (c *classComparer) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[len(c.got)-1]
}

var rsaKey = sync.OnceValues(func() (SigningKey, error) { return GenerateKey(RS256) })

func fakeTestProvider(t *testing.T, comparer PasswordComparer, hashes ...string) *Provider {
	t.Helper()
	rs, err := rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	var users []User
	for i, h := range hashes {
		users = append(users, User{Username: fmt.Sprintf("user%d", i), PasswordHash: h})
	}
	p, err := New(Config{
		Issuer:           "https://login.example.com",
		Users:            users,
		Keys:             []SigningKey{rs},
		CookieKeys:       [][2][]byte{{bytes.Repeat([]byte("h"), 32), bytes.Repeat([]byte("b"), 32)}},
		PasswordComparer: comparer,
	}, NewMemoryStore(nil))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnknownUserCostsLikeAKnownOne: a password for an unknown username is
// compared against a hash of the algorithm and cost of some real user's,
// whatever mix of costs the users have, the same one for the same name.
func TestUnknownUserCostsLikeAKnownOne(t *testing.T) {
	t.Run("bcrypt of two costs", func(t *testing.T) {
		h4, _ := bcrypt.GenerateFromPassword([]byte("pw"), 4)
		h5, _ := bcrypt.GenerateFromPassword([]byte("pw"), 5)
		rec := &recordingBcrypt{}
		p := fakeTestProvider(t, rec, string(h4), string(h5))
		costs := map[int]int{}
		for i := range 40 {
			if p.checkPassword(fmt.Sprintf("nobody%d", i), "pw") != nil {
				t.Fatal("an unknown user logged in")
			}
			fake := rec.last()
			cost, err := bcrypt.Cost(fake)
			if err != nil || bytes.Equal(fake, h4) || bytes.Equal(fake, h5) {
				t.Fatalf("unknown user compared against %q (cost %d, %v): want a fake bcrypt hash", fake, cost, err)
			}
			costs[cost]++
		}
		if len(costs) != 2 || costs[4] == 0 || costs[5] == 0 {
			t.Errorf("fake hash costs %v, want both 4 and 5", costs)
		}
	})

	t.Run("weighted by users, same per name", func(t *testing.T) {
		c := &classComparer{}
		hashes := []string{"cls$A$a1", "cls$A$a2", "cls$A$a3", "cls$B$b1"}
		p := fakeTestProvider(t, c, hashes...)
		if c.fakes != 2 {
			t.Errorf("%d fake hashes made for 2 costs", c.fakes)
		}
		againC := &classComparer{}
		again := fakeTestProvider(t, againC, hashes...) // a restart, or another node
		count := map[string]int{}
		const n = 800
		for i := range n {
			name := fmt.Sprintf("nobody%d", i)
			p.checkPassword(name, "x")
			first := c.last()
			p.checkPassword(name, "y")
			if c.last() != first {
				t.Fatalf("%s compared against %q, then %q", name, first, c.last())
			}
			again.checkPassword(name, "x")
			if got := againC.last(); got != first {
				t.Fatalf("%s: %q here, %q after a restart", name, first, got)
			}
			if !strings.HasSuffix(first, "$\x00fake") {
				t.Fatalf("%s compared against %q, not a fake hash", name, first)
			}
			cost, _ := c.HashCost([]byte(first))
			count[cost]++
		}
		// 3 of 4 users cost A: expect 600 of 800, within ±80.
		if count["A"] < 520 || count["A"] > 680 || count["A"]+count["B"] != n {
			t.Errorf("costs of unknown names %v, want about 600 A and 200 B", count)
		}
		p.checkPassword("user3", "wrong")
		if got := c.last(); got != "cls$B$b1" {
			t.Errorf("a known user compared against %q, want its own hash", got)
		}
	})

	t.Run("SetUsers hashes only new costs", func(t *testing.T) {
		c := &classComparer{}
		p := fakeTestProvider(t, c, "cls$A$a1", "cls$B$b1")
		if err := p.SetUsers([]User{{Username: "u", PasswordHash: "cls$A$a2"}, {Username: "v", PasswordHash: "cls$C$c1"}}); err != nil {
			t.Fatal(err)
		}
		if c.fakes != 3 {
			t.Errorf("%d fake hashes made for costs A, B, then A and C; want 3", c.fakes)
		}
		for i := range 40 {
			p.checkPassword(fmt.Sprintf("nobody%d", i), "x")
			if cost, _ := c.HashCost([]byte(c.last())); cost == "B" {
				t.Fatalf("an unknown name compared against a fake of cost B, which no user has any more")
			}
		}
	})
}

// TestBcryptComparerLongPassword: bcrypt reads 72 bytes of a password;
// the default comparer refuses a longer one rather than let anything
// appended to a 72-byte password match.
func TestBcryptComparerLongPassword(t *testing.T) {
	pw := []byte(strings.Repeat("0123456789", 8)[:72])
	hash, err := bcrypt.GenerateFromPassword(pw, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		password []byte
		want     bool
	}{
		{name: "72 bytes", password: pw, want: true},
		{name: "73 bytes", password: append(slices.Clone(pw), 'x')},
		{name: "71 bytes", password: pw[:71]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ok, err := (BcryptComparer{}).Compare(hash, tt.password); ok != tt.want || err != nil {
				t.Fatalf("Compare = %v, %v; want %v", ok, err, tt.want)
			}
		})
	}
}
