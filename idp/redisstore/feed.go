package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A feed is a small append-only log of events that every process sharing
// the server reads, such as the gateways' revoked sessions: a stream
// (XADD, read back with XRANGE from the last event a reader has seen) for
// the record, and a channel of the same name (PUBLISH) that carries each
// event at once to the processes subscribed to it. Stream IDs are the
// server's, so readers need no agreement on clocks to read "what came
// after"; each event carries its own expiry, and an append drops the
// expired events at the head of the stream, so that it stays about as long
// as the events still in force.
//
// Keys: `<prefix><name>` is the stream, `<prefix><name>` also the channel
// (channels are not keys). A Cluster keeps the stream on one node and
// broadcasts the channel to all.

// Event is one entry of a feed.
type Event struct {
	ID   string // the stream ID, which orders events
	Data []byte
}

// Stream entry fields: the event, and when it expires (Unix
// milliseconds).
const (
	feedData    = "d"
	feedExpires = "x"
)

// feedTrim is how many events at the head of a feed an append looks at for
// expired ones.
const feedTrim = 16

// Append adds data to the feed name, to keep until expires, and publishes
// it to the feed's subscribers. An error may leave the event in the
// stream unpublished: readers find it at their next [Store.Since].
func (s *Store) Append(ctx context.Context, name string, data []byte, expires time.Time) error {
	key := s.prefix + name
	err := s.client.XAdd(ctx, &redis.XAddArgs{
		Stream: key,
		Values: []any{feedData, data, feedExpires, strconv.FormatInt(expires.UnixMilli(), 10)},
	}).Err()
	if err != nil {
		return fmt.Errorf("redisstore: append: %w", err)
	}
	if err := s.client.Publish(ctx, key, data).Err(); err != nil {
		return fmt.Errorf("redisstore: publish: %w", err)
	}
	// Drop the expired events at the head. Another process may do the
	// same at once: XDEL of an entry already gone is no error.
	head, err := s.client.XRangeN(ctx, key, "-", "+", feedTrim).Result()
	if err != nil {
		return nil // the event is in; trimming waits for the next append
	}
	now := time.Now().UnixMilli()
	var expired []string
	for _, m := range head {
		x, _ := m.Values[feedExpires].(string)
		if ms, err := strconv.ParseInt(x, 10, 64); err != nil || ms > now {
			break
		}
		expired = append(expired, m.ID)
	}
	if len(expired) > 0 {
		s.client.XDel(ctx, key, expired...)
	}
	return nil
}

// Since returns at most count events of the feed name that came after the
// event with ID after ("" for the first), oldest first, with those
// expired left out. The ID of the last event read, expired or not, is
// where the next call goes on from: after itself if there was none.
func (s *Store) Since(ctx context.Context, name, after string, count int) (events []Event, last string, err error) {
	start := "-"
	if after != "" {
		start = "(" + after // exclusive, Redis 6.2
	}
	msgs, err := s.client.XRangeN(ctx, s.prefix+name, start, "+", int64(count)).Result()
	if err != nil {
		return nil, after, fmt.Errorf("redisstore: read feed: %w", err)
	}
	last = after
	now := time.Now().UnixMilli()
	for _, m := range msgs {
		last = m.ID
		x, _ := m.Values[feedExpires].(string)
		if ms, err := strconv.ParseInt(x, 10, 64); err == nil && ms <= now {
			continue
		}
		d, _ := m.Values[feedData].(string)
		events = append(events, Event{ID: m.ID, Data: []byte(d)})
	}
	return events, last, nil
}

// Notice is what a subscription to a feed delivers: an event as it was
// published, or (Data nil) word that the subscription was made or made
// again after a lost connection, when events published meanwhile were
// missed and the reader should read the feed with [Store.Since].
type Notice struct {
	Data []byte
}

// Subscribe subscribes to the feed name until ctx is done, reconnecting
// as needed. The channel closes when ctx is done.
func (s *Store) Subscribe(ctx context.Context, name string) <-chan Notice {
	out := make(chan Notice, 16)
	ps := s.client.Subscribe(ctx, s.prefix+name)
	in := ps.ChannelWithSubscriptions()
	go func() {
		defer close(out)
		defer ps.Close()
		for {
			var n Notice
			select {
			case <-ctx.Done():
				return
			case m, ok := <-in:
				if !ok {
					return
				}
				switch m := m.(type) {
				case *redis.Message:
					n.Data = []byte(m.Payload)
				case *redis.Subscription:
					if m.Kind != "subscribe" {
						continue
					}
				default:
					continue
				}
			}
			select {
			case out <- n:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
