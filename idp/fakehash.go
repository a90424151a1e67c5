package idp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// defaultFakeHash is checked for unknown usernames when the comparer is
// no [FakeHasher], or there are no users: bcrypt of cost 10.
var defaultFakeHash = []byte("$2a$10$lbHSwDkxbJyj1RgAk.klleS8cAQRKImw6qDREvUOZC3qUtCdCqfLa")

// fakeHash stands for the users whose hashes have one cost.
type fakeHash struct {
	cost  string
	hash  []byte
	users int
}

// setFakeHashes makes a fake hash for each cost among the users' hashes,
// so that checking the password of an unknown username costs what it
// costs for some real user. secret keys the choice among them.
func (p *Provider) setFakeHashes(secret []byte) error {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("authgate unknown username"))
	p.fakeKey = mac.Sum(nil)

	f, ok := p.comparer.(FakeHasher)
	if !ok || len(p.users) == 0 {
		p.fakes = []fakeHash{{hash: defaultFakeHash, users: 1}}
		return nil
	}
	byCost := make(map[string]*fakeHash)
	for _, u := range p.users {
		cost, err := f.HashCost([]byte(u.PasswordHash))
		if err != nil {
			return fmt.Errorf("idp: user %q: password hash: %w", u.Username, err)
		}
		if fh := byCost[cost]; fh != nil {
			fh.users++
			continue
		}
		hash, err := f.FakeHash([]byte(u.PasswordHash))
		if err != nil {
			return fmt.Errorf("idp: making a hash of %s: %w", cost, err)
		}
		byCost[cost] = &fakeHash{cost: cost, hash: hash, users: 1}
	}
	p.fakes = p.fakes[:0]
	for _, fh := range byCost {
		p.fakes = append(p.fakes, *fh)
	}
	// The order must not depend on map iteration, so that a name picks the
	// same cost on every start and every node.
	slices.SortFunc(p.fakes, func(a, b fakeHash) int { return strings.Compare(a.cost, b.cost) })
	return nil
}

// fakeHashFor returns the fake hash to check the password of the unknown
// username against: a keyed hash of the name picks a cost, each with the
// weight of its users, so that the name looks like one of them, always
// the same one, and which cost it got tells nothing without the key.
func (p *Provider) fakeHashFor(username string) []byte {
	if len(p.fakes) == 1 {
		return p.fakes[0].hash
	}
	mac := hmac.New(sha256.New, p.fakeKey)
	mac.Write([]byte(username))
	n := binary.BigEndian.Uint64(mac.Sum(nil)) % uint64(len(p.users))
	for _, fh := range p.fakes {
		if n < uint64(fh.users) {
			return fh.hash
		}
		n -= uint64(fh.users)
	}
	return p.fakes[len(p.fakes)-1].hash
}
