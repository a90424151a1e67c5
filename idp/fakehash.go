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

// setFakeKey derives from secret the key that picks a fake hash for an
// unknown username.
func (p *Provider) setFakeKey(secret []byte) {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("authgate unknown username"))
	p.fakeKey = mac.Sum(nil)
}

// fakeHashes makes a fake hash for each cost among the users' hashes, so
// that checking the password of an unknown username costs what it costs
// for some real user. A cost that prev has a fake for takes that one,
// rather than a new hash: a change of users costs no hashing for the
// costs it keeps.
func (p *Provider) fakeHashes(users map[string]*User, prev []fakeHash) ([]fakeHash, error) {
	f, ok := p.comparer.(FakeHasher)
	if !ok || len(users) == 0 {
		return []fakeHash{{hash: defaultFakeHash, users: 1}}, nil
	}
	byCost := make(map[string]*fakeHash)
	for _, u := range users {
		cost, err := f.HashCost([]byte(u.PasswordHash))
		if err != nil {
			return nil, fmt.Errorf("idp: user %q: password hash: %w", u.Username, err)
		}
		if fh := byCost[cost]; fh != nil {
			fh.users++
			continue
		}
		var hash []byte
		if i := slices.IndexFunc(prev, func(fh fakeHash) bool { return fh.cost == cost }); i >= 0 {
			hash = prev[i].hash
		} else if hash, err = f.FakeHash([]byte(u.PasswordHash)); err != nil {
			return nil, fmt.Errorf("idp: making a hash of %s: %w", cost, err)
		}
		byCost[cost] = &fakeHash{cost: cost, hash: hash, users: 1}
	}
	fakes := make([]fakeHash, 0, len(byCost))
	for _, fh := range byCost {
		fakes = append(fakes, *fh)
	}
	// The order must not depend on map iteration, so that a name picks the
	// same cost on every start and every node.
	slices.SortFunc(fakes, func(a, b fakeHash) int { return strings.Compare(a.cost, b.cost) })
	return fakes, nil
}

// fakeHashFor returns the fake hash to check the password of the unknown
// username against: a keyed hash of the name picks a cost, each with the
// weight of its users, so that the name looks like one of them, always
// the same one, and which cost it got tells nothing without the key.
func (p *Provider) fakeHashFor(us *userSet, username string) []byte {
	if len(us.fakes) == 1 {
		return us.fakes[0].hash
	}
	mac := hmac.New(sha256.New, p.fakeKey)
	mac.Write([]byte(username))
	n := binary.BigEndian.Uint64(mac.Sum(nil)) % uint64(len(us.byName))
	for _, fh := range us.fakes {
		if n < uint64(fh.users) {
			return fh.hash
		}
		n -= uint64(fh.users)
	}
	return us.fakes[len(us.fakes)-1].hash
}
