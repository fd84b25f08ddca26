package env

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// PKI is a private certificate authority, as a company PKI or cert-manager's CA issuer is: it
// issues the server certificate of a token endpoint that public roots do not trust, and the
// client certificates of the gateway. Keys are made at start; nothing is committed.
type PKI struct {
	Dir    string // where the PEM files are written
	CAFile string // the CA certificate: what tokenEndpointCAFile points to

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

var serials atomic.Int64

// KeyFormat is how a private key file is written: the plugin reads each of them.
type KeyFormat int

const (
	PKCS8 KeyFormat = iota // PRIVATE KEY (RSA or EC)
	PKCS1                  // RSA PRIVATE KEY
	SEC1                   // EC PRIVATE KEY, as cert-manager writes an ECDSA key
)

// NewPKI makes a CA named name and writes its certificate to dir/<name>-ca.pem.
func NewPKI(dir, name string) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(serials.Add(1)),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"oboexchange e2e"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, ca: ca, caKey: key, CAFile: filepath.Join(dir, name+"-ca.pem")}
	return p, writePEM(p.CAFile, "CERTIFICATE", der)
}

// Pool is the CA as a certificate pool.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

// ServerCertificate issues a certificate for 127.0.0.1 and localhost.
func (p *PKI) ServerCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := p.issue(&key.PublicKey, pkix.Name{CommonName: "127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ClientCertificate issues a client certificate for subject with a new key (RSA 2048 with PKCS1,
// else EC P-256), and writes dir/<name>.crt and dir/<name>.key.
func (p *PKI) ClientCertificate(name string, subject pkix.Name, format KeyFormat) (certFile, keyFile string, err error) {
	key, err := newKey(format)
	if err != nil {
		return "", "", err
	}
	der, err := p.issue(key.(crypto.Signer).Public(), subject, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", "", err
	}
	return writePair(p.Dir, name, der, key, format)
}

func (p *PKI) issue(public crypto.PublicKey, subject pkix.Name, usage x509.ExtKeyUsage) ([]byte, error) {
	template := &x509.Certificate{
		SerialNumber: big.NewInt(serials.Add(1)),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		template.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		template.DNSNames = []string{"localhost"}
	}
	return x509.CreateCertificate(rand.Reader, template, p.ca, public, p.caKey)
}

// SelfSigned makes an RSA 2048 self-signed certificate and its key (PKCS#8), as Microsoft's
// instructions for an Entra certificate credential do (openssl req -x509, or
// New-SelfSignedCertificate), and writes dir/<name>.crt and dir/<name>.key. It returns the
// certificate's x5t#S256 too.
func SelfSigned(dir, name, cn string) (certFile, keyFile, x5tS256 string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", "", err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(serials.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return "", "", "", err
	}
	certFile, keyFile, err = writePair(dir, name, der, key, PKCS8)
	sum := sha256.Sum256(der)
	return certFile, keyFile, base64.RawURLEncoding.EncodeToString(sum[:]), err
}

func newKey(format KeyFormat) (crypto.PrivateKey, error) {
	if format == PKCS1 {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// writePair writes a certificate and its key in the given format.
func writePair(dir, name string, der []byte, key crypto.PrivateKey, format KeyFormat) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	var keyType string
	var keyDER []byte
	switch format {
	case PKCS1:
		keyType, keyDER = "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	case SEC1:
		keyType = "EC PRIVATE KEY"
		keyDER, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	default:
		keyType = "PRIVATE KEY"
		keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	}
	if err != nil {
		return "", "", err
	}
	return certFile, keyFile, writePEM(keyFile, keyType, keyDER)
}

func writePEM(path, blockType string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600)
}

// PublicKeyOf reads the public key of a certificate file.
func PublicKeyOf(certFile string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, os.ErrInvalid
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	return cert.PublicKey, nil
}

// NewKeyFile makes a key alone (RSA 2048 with PKCS1, else EC P-256), as a private_key_jwt client
// whose public key is registered at the authorization server has, and writes dir/<name>.key.
func NewKeyFile(dir, name string, format KeyFormat) (keyFile string, public crypto.PublicKey, err error) {
	key, err := newKey(format)
	if err != nil {
		return "", nil, err
	}
	var keyType string
	var der []byte
	switch format {
	case PKCS1:
		keyType, der = "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	default:
		keyType = "PRIVATE KEY"
		if der, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
			return "", nil, err
		}
	}
	keyFile = filepath.Join(dir, name+".key")
	return keyFile, key.(crypto.Signer).Public(), writePEM(keyFile, keyType, der)
}
