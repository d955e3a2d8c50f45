package natsauth

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:s3cret@a:4222,nats://b:4222", "nats://u:xxxxx@a:4222,nats://b:4222"},
		{"tls://tok3n@a:4222", "tls://xxxxx@a:4222"},
	} {
		got := RedactURL(c.in)
		if got != c.want || strings.Contains(got, "s3cret") || strings.Contains(got, "tok3n") {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestClientValidate(t *testing.T) {
	for _, c := range []Client{
		{NKeyFile: "a", User: "u"},
		{Password: "p"},
		{CertFile: "c"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (Client{User: "u", Password: "p", CAFile: "ca"}).Validate(); err != nil {
		t.Error(err)
	}
}
