/*
 * svirt's compiled search core: ausearch 3.0.9's event assembly and order over plain
 * audit log files, at the speed of reading them.
 *
 * Built by scripts/setup.sh (cc -O2 -shared) into _scan.so and used through ctypes by
 * svirt.audit.native; the Python engines (svirt.audit.search) remain the definition
 * the tests compare with, and the fallback when this library is missing.
 *
 * What it does, per line of each mapped file, with no allocation per line:
 *   - the header: [node=N ]type=T msg=audit(SEC.MS:SERIAL); other lines are counted
 *     as malformed (blank lines and ausearch's own separators are not);
 *   - records outside the -ts/-te range are dropped, as ausearch drops them;
 *   - events are assembled and let out exactly as svirt.audit.events.EventGrouper
 *     (ausearch-lol.c): join by node and stamp, complete 2 s later or at once for
 *     single-record kinds, EOE alone dropped, out in time-stamp order (slot on ties);
 *   - when the criteria are only record types, a serial and a time range ("decided"),
 *     it matches and writes --raw or default output itself; otherwise it gathers the
 *     events that can match (type, serial, a comm=/exe=/key= value holding the string,
 *     a pid= of the number) in a batch, and Python's Matcher decides.
 *   - a -ts window is found by bisection (timestamps grow in a log), reading starts
 *     SEEK_MARGIN seconds before it; reading stops SEEK_MARGIN seconds after -te.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pwd.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (1 << 20)
#define AUSEARCH_RECORD 8969 /* ausearch reads a record into MAX_AUDIT_MESSAGE_LENGTH bytes */
#define WINDOW 2
#define SEEK_MARGIN 60
#define MAX_EXAMPLES 5
#define T_SYSCALL 1300
#define T_PROCTITLE 1327
#define T_KERNEL 2000
#define T_EOE 1320
#define T_FIRST_ANOM 2100
#define T_MAC_UNLBL_ALLOW 1406
#define T_MAC_CALIPSO_DEL 1419

typedef struct {
	const char *p; /* line start */
	int32_t raw;   /* length of the record before 0x1D */
	int32_t full;  /* length of the whole line */
	int32_t type;
	int32_t file;
	int64_t off;
} rec_t;

typedef struct ev {
	long long sec;
	long milli;
	unsigned long serial;
	const char *node;
	int nodelen;
	int slot;
	long long seq;
	int complete;
	int enriched;
	int first_type;
	rec_t *recs;
	int nrec, cap;
	struct ev *hnext; /* building hash chain */
} ev_t;

typedef struct {
	/* criteria */
	const int *types;
	int ntypes;
	int has_start, has_end, has_serial;
	long long start, end;
	unsigned long serial;
	const char *const *needles; /* pre-check: a value of field k holds needle k */
	const char *const *fields;
	int nneedles;
	int has_pid;
	unsigned long long pid;
	const char *comm; /* the matcher's criteria (NULL: not wanted) */
	const char *exe;
	const char *key;
	int has_success;
	int success;
	int whole_word;
	int decided; /* 1: C matches and writes; 0: callback */
	int format;  /* 0 raw, 1 default, 2 interpreted (-i) */
	int out_fd;
	/* message type names */
	const char *const *type_names;
	const int *type_ids;
	int ntypenames;
	/* uid/gid selectors as ausearch holds them (uid_t; unset: -1, login uid -2) */
	unsigned int ev_uid, ev_euid, ev_auid, ev_gid, ev_egid;
	int uid_all, gid_all;
	const char *uid_name, *euid_name, *auid_name; /* names are compared as names */
	/* -sc: the number; a name given also requires this machine's arch (0: any) */
	int has_syscall;
	long long syscall;
	unsigned long long syscall_arch;
	int has_exit; /* -e */
	long long exit;
} opts_t;

typedef struct {
	long long lines;
	long long events;
	long long matched;
	long long malformed;
	long long bytes;
	int nexamples;
	int example_file[MAX_EXAMPLES];
	long long example_line[MAX_EXAMPLES];
	long long example_off[MAX_EXAMPLES];
	int example_reason[MAX_EXAMPLES]; /* 0 not a record, 1 too long, 2 bad stamp */
	int stopped;
	int write_error;
} stats_t;

typedef struct {
	char *map;
	size_t size;
	size_t pos;
	long long lineno; /* -1 when unknown (after a seek) */
	int seeked;
	int done;
} file_t;

typedef struct {
	long long sec;
	long long seq;
	ev_t *ev;
} tnode_t;

typedef struct {
	opts_t o;
	stats_t st;
	/* type name hash */
	const char **tn;
	int *tid;
	int *tnlen;
	unsigned tmask;
	/* building events */
	ev_t **hash;
	unsigned hmask;
	int nbuilding;
	/* timeout heap, held heap, free slots */
	tnode_t *th;
	int thn, thcap;
	ev_t **hh;
	int hhn, hhcap;
	int *fs;
	int fsn, fscap;
	int next_slot;
	long long seq;
	/* files */
	file_t *files;
	int nfiles, fcap;
	/* output */
	char *out;
	size_t outn, outcap;
	/* the batch of candidate events for Python: per record (file, offset, length,
	 * raw length, type); per event (first record, records, sec, milli, serial) */
	long long *brec;
	long long nbrec, brcap;
	long long *bev;
	long long nbev, bevcap;
	char *scratch;
} scan_t;

/* ---------------------------------------------------------------------------------- */

static unsigned fnv(const char *s, int n)
{
	unsigned h = 2166136261u;
	for (int i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

static int type_id(scan_t *s, const char *name, int n)
{
	unsigned h = fnv(name, n) & s->tmask;
	while (s->tn[h]) {
		if (s->tnlen[h] == n && memcmp(s->tn[h], name, n) == 0)
			return s->tid[h];
		h = (h + 1) & s->tmask;
	}
	if (n > 9 && memcmp(name, "UNKNOWN[", 8) == 0 && name[n - 1] == ']') {
		long v = 0;
		for (int i = 8; i < n - 1; i++) {
			if (name[i] < '0' || name[i] > '9')
				return -1;
			v = v * 10 + (name[i] - '0');
		}
		return (int)v;
	}
	if (n > 0 && n < 10) {
		long v = 0;
		for (int i = 0; i < n; i++) {
			if (name[i] < '0' || name[i] > '9')
				return -1;
			v = v * 10 + (name[i] - '0');
		}
		return (int)v;
	}
	return -1;
}

static int single_record(int t)
{
	return t == T_PROCTITLE || t == T_KERNEL || t < T_SYSCALL || t >= T_FIRST_ANOM ||
	       (t >= T_MAC_UNLBL_ALLOW && t <= T_MAC_CALIPSO_DEL);
}

/* ---------------------------------------------------------------------------------- */
/* heaps */

static int ev_less(const ev_t *a, const ev_t *b)
{
	if (a->sec != b->sec)
		return a->sec < b->sec;
	if (a->milli != b->milli)
		return a->milli < b->milli;
	if (a->serial != b->serial)
		return a->serial < b->serial;
	return a->slot < b->slot;
}

static void hh_push(scan_t *s, ev_t *e)
{
	if (s->hhn == s->hhcap) {
		s->hhcap = s->hhcap ? s->hhcap * 2 : 1024;
		s->hh = realloc(s->hh, sizeof(*s->hh) * s->hhcap);
	}
	int i = s->hhn++;
	while (i > 0) {
		int p = (i - 1) / 2;
		if (!ev_less(e, s->hh[p]))
			break;
		s->hh[i] = s->hh[p];
		i = p;
	}
	s->hh[i] = e;
}

static ev_t *hh_pop(scan_t *s)
{
	ev_t *top = s->hh[0];
	ev_t *last = s->hh[--s->hhn];
	int i = 0, n = s->hhn;
	for (;;) {
		int c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && ev_less(s->hh[c + 1], s->hh[c]))
			c++;
		if (!ev_less(s->hh[c], last))
			break;
		s->hh[i] = s->hh[c];
		i = c;
	}
	if (n)
		s->hh[i] = last;
	return top;
}

static int t_less(const tnode_t *a, const tnode_t *b)
{
	return a->sec != b->sec ? a->sec < b->sec : a->seq < b->seq;
}

static void th_push(scan_t *s, tnode_t t)
{
	if (s->thn == s->thcap) {
		s->thcap = s->thcap ? s->thcap * 2 : 1024;
		s->th = realloc(s->th, sizeof(*s->th) * s->thcap);
	}
	int i = s->thn++;
	while (i > 0) {
		int p = (i - 1) / 2;
		if (!t_less(&t, &s->th[p]))
			break;
		s->th[i] = s->th[p];
		i = p;
	}
	s->th[i] = t;
}

static tnode_t th_pop(scan_t *s)
{
	tnode_t top = s->th[0];
	tnode_t last = s->th[--s->thn];
	int i = 0, n = s->thn;
	for (;;) {
		int c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && t_less(&s->th[c + 1], &s->th[c]))
			c++;
		if (!t_less(&s->th[c], &last))
			break;
		s->th[i] = s->th[c];
		i = c;
	}
	if (n)
		s->th[i] = last;
	return top;
}

static void fs_push(scan_t *s, int v)
{
	if (s->fsn == s->fscap) {
		s->fscap = s->fscap ? s->fscap * 2 : 256;
		s->fs = realloc(s->fs, sizeof(int) * s->fscap);
	}
	int i = s->fsn++;
	while (i > 0) {
		int p = (i - 1) / 2;
		if (s->fs[p] <= v)
			break;
		s->fs[i] = s->fs[p];
		i = p;
	}
	s->fs[i] = v;
}

static int fs_pop(scan_t *s)
{
	int top = s->fs[0];
	int last = s->fs[--s->fsn];
	int i = 0, n = s->fsn;
	for (;;) {
		int c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && s->fs[c + 1] < s->fs[c])
			c++;
		if (s->fs[c] >= last)
			break;
		s->fs[i] = s->fs[c];
		i = c;
	}
	if (n)
		s->fs[i] = last;
	return top;
}

/* ---------------------------------------------------------------------------------- */
/* building hash */

static unsigned ev_hash(long long sec, long milli, unsigned long serial, const char *node,
			int nodelen)
{
	unsigned long long h = (unsigned long long)sec * 1000003ull ^ (unsigned long long)milli * 31ull ^
			       (unsigned long long)serial * 2654435761ull;
	if (node)
		h ^= fnv(node, nodelen);
	return (unsigned)(h ^ (h >> 29));
}

static ev_t **find_slot(scan_t *s, long long sec, long milli, unsigned long serial,
			const char *node, int nodelen)
{
	ev_t **pp = &s->hash[ev_hash(sec, milli, serial, node, nodelen) & s->hmask];
	while (*pp) {
		ev_t *e = *pp;
		if (e->sec == sec && e->milli == milli && e->serial == serial &&
		    e->nodelen == nodelen && (!node || memcmp(e->node, node, nodelen) == 0))
			return pp;
		pp = &e->hnext;
	}
	return pp;
}

static void grow_hash(scan_t *s)
{
	unsigned n = (s->hmask + 1) * 2;
	ev_t **h = calloc(n, sizeof(*h));
	for (unsigned i = 0; i <= s->hmask; i++) {
		ev_t *e = s->hash[i];
		while (e) {
			ev_t *next = e->hnext;
			unsigned b = ev_hash(e->sec, e->milli, e->serial, e->node, e->nodelen) & (n - 1);
			e->hnext = h[b];
			h[b] = e;
			e = next;
		}
	}
	free(s->hash);
	s->hash = h;
	s->hmask = n - 1;
}

static void unlink_building(scan_t *s, ev_t *e)
{
	ev_t **pp = find_slot(s, e->sec, e->milli, e->serial, e->node, e->nodelen);
	if (*pp == e) {
		*pp = e->hnext;
		s->nbuilding--;
	}
	e->hnext = NULL;
}

static void add_rec(ev_t *e, rec_t r)
{
	if (e->nrec == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 4;
		e->recs = realloc(e->recs, sizeof(rec_t) * e->cap);
	}
	e->recs[e->nrec++] = r;
	if (r.raw != r.full)
		e->enriched = 1;
}

/* ---------------------------------------------------------------------------------- */
/* output */

static void out_flush(scan_t *s)
{
	size_t done = 0;
	while (done < s->outn) {
		ssize_t w = write(s->o.out_fd, s->out + done, s->outn - done);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			s->st.write_error = errno;
			s->st.stopped = 1;
			break;
		}
		done += (size_t)w;
	}
	s->outn = 0;
}

static void out_put(scan_t *s, const char *p, size_t n)
{
	if (s->outn + n > s->outcap) {
		out_flush(s);
		if (n > s->outcap) {
			ssize_t w = write(s->o.out_fd, p, n);
			if (w < 0) {
				s->st.write_error = errno;
				s->st.stopped = 1;
			}
			return;
		}
	}
	memcpy(s->out + s->outn, p, n);
	s->outn += n;
}

static int has_type(scan_t *s, const ev_t *e)
{
	if (!s->o.ntypes)
		return 1;
	for (int i = 0; i < e->nrec; i++)
		for (int j = 0; j < s->o.ntypes; j++)
			if (e->recs[i].type == s->o.types[j])
				return 1;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Does some value of field f (quoted, a word, or hex-encoded) in p[0:n] contain needle?
 * A superset of what the matcher compares: it takes its values from these fields. */
static int field_has(const char *p, size_t n, const char *f, size_t fl, const char *needle,
		     size_t nl, char *scratch)
{
	const char *end = p + n, *q = p;
	while (q < end) {
		const char *hit = memmem(q, (size_t)(end - q), f, fl);
		if (!hit)
			return 0;
		const char *v = hit + fl, *w = v;
		q = v;
		if (v < end && *v == '"') {
			const char *close = memchr(v + 1, '"', (size_t)(end - v - 1));
			const char *stop = close ? close : end;
			if (memmem(v + 1, (size_t)(stop - v - 1), needle, nl))
				return 1;
			continue;
		}
		while (w < end && *w != ' ' && *w != '\'')
			w++;
		if (memmem(v, (size_t)(w - v), needle, nl))
			return 1;
		size_t k = 0;
		const char *h = v;
		while (h + 1 < w && k < MAX_LINE && hexval(h[0]) >= 0 && hexval(h[1]) >= 0) {
			char c = (char)(hexval(h[0]) * 16 + hexval(h[1]));
			if (!c)
				break;
			scratch[k++] = c;
			h += 2;
		}
		if (k >= nl && memmem(scratch, k, needle, nl))
			return 1;
	}
	return 0;
}

/* Is there a pid= (ppid=, spid=, ...) whose number is pid? */
static int pid_in(const char *p, size_t n, unsigned long long pid)
{
	const char *end = p + n, *q = p;
	while (q < end) {
		const char *hit = memmem(q, (size_t)(end - q), "pid=", 4);
		if (!hit)
			return 0;
		const char *v = hit + 4;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		unsigned long long x = 0;
		int d = 0;
		while (v < end && *v >= '0' && *v <= '9' && d < 20) {
			x = x * 10 + (unsigned long long)(*v++ - '0');
			d++;
		}
		if (d && x == pid)
			return 1;
		q = hit + 4;
	}
	return 0;
}

static int may_match(scan_t *s, const ev_t *e)
{
	if (!has_type(s, e))
		return 0;
	if (s->o.has_serial && e->serial != s->o.serial)
		return 0;
	for (int k = 0; k < s->o.nneedles; k++) {
		const char *needle = s->o.needles[k];
		size_t nl = strlen(needle), fl = strlen(s->o.fields[k]);
		int keep = 0;
		for (int i = 0; i < e->nrec && !keep; i++)
			keep = field_has(e->recs[i].p, e->recs[i].raw, s->o.fields[k], fl, needle, nl,
					 s->scratch);
		if (!keep)
			return 0;
	}
	if (s->o.has_pid) {
		int keep = 0;
		for (int i = 0; i < e->nrec && !keep; i++)
			keep = pid_in(e->recs[i].p, e->recs[i].raw, s->o.pid);
		if (!keep)
			return 0;
	}
	return 1;
}


/* ---------------------------------------------------------------------------------- */
/* ausearch's matching: a line-for-line port of svirt.audit.matching.Matcher (the Python
 * definition, which the tests compare with ausearch); the same rules in the same order. */

#define K_SYSCALL 1300
#define K_LOGIN 1006
#define K_USER 1005
#define K_USER_AVC 1107
#define K_AVC 1400
#define K_CONFIG_CHANGE 1305
#define K_DAEMON_ACCEPT 1207
#define K_DAEMON_CLOSE 1208
#define K_FEATURE_CHANGE 1328
#define K_ANOM_LINK 1702
#define K_SECCOMP 1326
#define K_ANOM_PROMISCUOUS 1700
#define K_ANOM_ABEND 1701
#define K_MAC_POLICY_LOAD 1403
#define K_MAC_UNLBL_STCDEL 1417
#define K_INTEGRITY_DATA 1800
#define K_INTEGRITY_RULE 1805
#define K_NETFILTER_CFG 1325
#define K_EVENT_LISTENER 1335
#define K_TTY 1319
#define K_ADD_GROUP 1116
#define K_DEL_GROUP 1117
#define K_GRP_MGMT 1132
#define ID_UNSET 0xFFFFFFFFu
#define AUID_UNSET 0xFFFFFFFEu
#define S_UNSET (-1)
#define S_FAILED 0
#define S_SUCCESS 1
#define MAX_KEYS 64

typedef struct {
	const char *p;
	long n; /* -1: None */
} str_t;

typedef struct {
	unsigned long long pid;
	int has_pid;
	unsigned int uid, euid, gid, egid, loginuid;
	int uid_set;
	str_t tuid, teuid, tauid; /* ausearch's lookup_uid() names (n < 0: none) */
	str_t comm, exe;
	str_t keys[MAX_KEYS];
	int nkeys, has_keys;
	long long success;
	long long syscall;	 /* ausearch's search_items start at 0 */
	unsigned long long arch; /* strtoul(…, 16) of arch= */
	long long exit;
	int exit_set;
	char *arena;
	long used, cap;
} items_t;

typedef struct {
	const char *m;
	long n;
} msg_t;

static long mfind(const msg_t *m, const char *needle, long start)
{
	long nl = (long)strlen(needle);
	if (start < 0)
		start = 0;
	if (start > m->n)
		return -1;
	const char *hit = memmem(m->m + start, (size_t)(m->n - start), needle, (size_t)nl);
	return hit ? (long)(hit - m->m) : -1;
}

static long mfindc(const msg_t *m, char c, long start)
{
	if (start < 0)
		start = 0;
	if (start >= m->n)
		return -1;
	const char *hit = memchr(m->m + start, c, (size_t)(m->n - start));
	return hit ? (long)(hit - m->m) : -1;
}

static int at(const msg_t *m, long i)
{
	return i >= 0 && i < m->n ? (unsigned char)m->m[i] : -1;
}

static unsigned long long m_strtoul(const msg_t *m, long pos)
{
	while (pos < m->n && (m->m[pos] == ' ' || m->m[pos] == '\t'))
		pos++;
	unsigned long long v = 0;
	while (pos < m->n && m->m[pos] >= '0' && m->m[pos] <= '9')
		v = v * 10 + (unsigned long long)(m->m[pos++] - '0');
	return v;
}

/* strtoul() of a uid/gid value, kept in a 32-bit uid_t as ausearch keeps it */
static unsigned int id_at(const msg_t *m, long pos)
{
	while (pos < m->n && (m->m[pos] == ' ' || m->m[pos] == '\t'))
		pos++;
	int neg = at(m, pos) == '-';
	if (at(m, pos) == '-' || at(m, pos) == '+')
		pos++;
	unsigned long long v = m_strtoul(m, pos);
	return (unsigned int)(neg ? -v : v);
}

static int is_hexc(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

static str_t none(void)
{
	return (str_t){NULL, -1};
}

static char *arena_take(items_t *it, long n)
{
	if (it->used + n > it->cap) {
		/* a fresh block: earlier strings keep pointing into the old one, which stays
		 * alive until the event is decided (kept in a small list) */
		long cap = n > 65536 ? n : 65536;
		char *block = malloc((size_t)cap + sizeof(char *));
		*(char **)block = it->arena;
		it->arena = block;
		it->used = 0;
		it->cap = cap;
	}
	char *p = it->arena + sizeof(char *) + it->used;
	it->used += n;
	return p;
}

static void items_free(items_t *it)
{
	char *b = it->arena;
	while (b) {
		char *next = *(char **)b;
		free(b);
		b = next;
	}
	it->arena = NULL;
}

static str_t unescape(items_t *it, const msg_t *m, long pos)
{
	if (at(m, pos) == '(') {
		long close = mfindc(m, ')', pos);
		if (close < 0)
			return none();
		return (str_t){m->m + pos, close + 1 - pos};
	}
	long end = pos;
	while (end < m->n && is_hexc((unsigned char)m->m[end]))
		end++;
	long len = end - pos;
	if (len < 2)
		return none();
	if (len % 2)
		len--;
	char *out = arena_take(it, len / 2);
	long k = 0;
	for (long i = 0; i < len; i += 2) {
		char c = (char)(hexval(m->m[pos + i]) * 16 + hexval(m->m[pos + i + 1]));
		if (!c)
			break;
		out[k++] = c;
	}
	return (str_t){out, k};
}

/* (found?, value, end) of a quoted value starting at pos */
static int quoted(const msg_t *m, long pos, str_t *val, long *end)
{
	long e = mfindc(m, '"', pos + 1);
	if (e < 0)
		return 0;
	*val = (str_t){m->m + pos + 1, e - pos - 1};
	*end = e;
	return 1;
}

typedef struct {
	const opts_t *o;
	int want_pid, want_comm, want_exe, want_key, want_success;
	int want_uid, want_euid, want_auid, want_gid, want_egid;
	int want_names;
	const char *interp; /* the enriched part ausearch loads (one record or SYSCALL first) */
	long interp_n;
	int want_syscall;
} matcher_t;

static str_t cstr(const char *p)
{
	return (str_t){p, (long)strlen(p)};
}

/* ausearch's lookup_uid(): the loaded enriched value of the field, else root/unset, else
 * this machine's passwd name */
static str_t lookup_uid(const matcher_t *mt, items_t *it, const char *field, unsigned int uid)
{
	if (!mt->want_names)
		return (str_t){NULL, -1};
	str_t found = {NULL, -1};
	long flen = (long)strlen(field);
	long i = 0, n = mt->interp_n;
	const char *p = mt->interp;
	while (p && i < n) {
		while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
			i++;
		long start = i;
		while (i < n && !(p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
			i++;
		const char *eq = memchr(p + start, '=', (size_t)(i - start));
		if (eq && eq - (p + start) == flen && strncasecmp(p + start, field, (size_t)flen) == 0) {
			long vs = (long)(eq + 1 - p), ve = i;
			while (vs < ve && p[vs] == '"')
				vs++;
			while (ve > vs && p[ve - 1] == '"')
				ve--;
			found = (str_t){p + vs, ve - vs};
		}
	}
	if (found.n >= 0)
		return found;
	if (uid == 0)
		return cstr("root");
	if (uid == ID_UNSET)
		return cstr("unset");
	struct passwd *pw = getpwuid(uid);
	if (!pw)
		return (str_t){NULL, -1};
	long len = (long)strlen(pw->pw_name);
	char *copy = arena_take(it, len + 1);
	memcpy(copy, pw->pw_name, (size_t)len + 1);
	return (str_t){copy, len};
}

static void set_uid(const matcher_t *mt, items_t *it, unsigned int uid)
{
	it->uid = uid;
	it->uid_set = 1;
	it->tuid = lookup_uid(mt, it, "uid", uid);
}

static void set_auid(const matcher_t *mt, items_t *it, unsigned int auid)
{
	it->loginuid = auid;
	it->tauid = lookup_uid(mt, it, "auid", auid);
}

/* "auid=" or else "loginuid=" from term: the value's start, or -1 */
static long auid_value(const msg_t *m, long term)
{
	long i = mfind(m, "auid=", term);
	if (i >= 0)
		return i + 5;
	i = mfind(m, "loginuid=", term);
	return i < 0 ? -1 : i + 9;
}

static int task_info(const matcher_t *mt, const msg_t *m, items_t *it)
{
	long term = 0, i;
	if (mt->want_pid) {
		i = mfind(m, " pid=", term);
		if (i < 0)
			return 16;
		long sp = mfindc(m, ' ', i + 5);
		if (sp < 0)
			return 17;
		it->pid = m_strtoul(m, i + 5);
		it->has_pid = 1;
		term = sp;
	}
	if (mt->want_auid) {
		long ptr = auid_value(m, term);
		if (ptr < 0)
			return 19;
		term = mfindc(m, ' ', ptr);
		if (term < 0)
			return 20;
		set_auid(mt, it, id_at(m, ptr));
	}
	if (mt->want_uid) {
		i = mfind(m, "uid=", term);
		while (i > 0 && m->m[i - 1] == 'a') { /* auid: look again */
			term = i + 1;
			i = mfind(m, "uid=", term);
		}
		if (i < 0)
			return 22;
		term = mfindc(m, ' ', i + 4);
		if (term < 0)
			return 23;
		set_uid(mt, it, id_at(m, i + 4));
	}
	static const char *const idnames[] = {"gid=", "euid=", "egid="};
	const int wants[] = {mt->want_gid, mt->want_euid, mt->want_egid};
	unsigned int *dest[] = {&it->gid, &it->euid, &it->egid};
	static const int absent[] = {25, 28, 31};
	for (int k = 0; k < 3; k++) {
		if (!wants[k])
			continue;
		long len = (long)strlen(idnames[k]);
		i = mfind(m, idnames[k], term);
		if (i < 0)
			return absent[k];
		term = mfindc(m, ' ', i + len);
		if (term < 0)
			return absent[k] + 1;
		*dest[k] = id_at(m, i + len);
		if (k == 1)
			it->teuid = lookup_uid(mt, it, "euid", it->euid);
	}
	if (mt->want_comm) {
		i = mfind(m, "comm=", term);
		if (i < 0)
			return 38;
		it->comm = none();
		long v = i + 5;
		if (at(m, v) == '"') {
			if (!quoted(m, v, &it->comm, &term))
				return 37;
		} else
			it->comm = unescape(it, m, v);
	}
	if (mt->want_exe) {
		i = mfind(m, "exe=", 0);
		if (i < 0)
			return 40;
		long v = i + 4;
		if (at(m, v) == '"') {
			if (!quoted(m, v, &it->exe, &term))
				return 39;
		} else
			it->exe = unescape(it, m, v);
	}
	if (mt->want_success) {
		i = mfind(m, "res=", term);
		if (i >= 0)
			it->success = (long long)m_strtoul(m, i + 4);
	}
	return 0;
}

static void add_key(items_t *it, str_t k)
{
	it->has_keys = 1;
	if (it->nkeys < MAX_KEYS)
		it->keys[it->nkeys++] = k;
}

static void add_hex_keys(items_t *it, str_t raw)
{
	it->has_keys = 1;
	long start = 0;
	for (long i = 0; i <= raw.n; i++) {
		if (i == raw.n || raw.p[i] == '\x01') {
			if (i > start)
				add_key(it, (str_t){raw.p + start, i - start});
			start = i + 1;
		}
	}
}

static unsigned long long m_hex(const msg_t *m, long pos)
{
	unsigned long long v = 0;
	for (; pos < m->n; pos++) {
		char c = m->m[pos];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			break;
		v = v * 16 + (unsigned long long)d;
	}
	return v;
}

static int m_syscall(const matcher_t *mt, const msg_t *m, items_t *it)
{
	long i = mfind(m, "arch=", 0);
	if (i >= 0)
		it->arch = m_hex(m, i + 5);
	i = mfind(m, "syscall=", 0);
	if (i < 0)
		return 4;
	long term = mfindc(m, ' ', i + 8);
	if (term < 0)
		return 5;
	it->syscall = (long long)m_strtoul(m, i + 8);
	if (mt->want_success) {
		i = mfind(m, "success=", term);
		if (i >= 0) {
			long sp = mfindc(m, ' ', i + 8);
			if (sp < 0)
				return 7;
			it->success = (sp - (i + 8) == 3 && memcmp(m->m + i + 8, "yes", 3) == 0)
					      ? S_SUCCESS
					      : S_FAILED;
			term = sp;
		}
	}
	if (mt->o->has_exit) {
		/* looked for after success= when that is wanted too, as ausearch does */
		i = mfind(m, "exit=", term);
		if (i < 0)
			return 8;
		long sp = mfindc(m, ' ', i + 5);
		if (sp < 0)
			return 9;
		char buf[72];
		long n = sp - (i + 5) < 71 ? sp - (i + 5) : 71;
		memcpy(buf, m->m + i + 5, (size_t)n);
		buf[n] = 0;
		it->exit = strtoll(buf, NULL, 0);
		it->exit_set = 1;
		term = sp;
	}
	static const char *const args[] = {"a0=", "a1="};
	for (int a = 0; a < 2; a++) {
		i = mfind(m, args[a], term);
		if (i < 0)
			return 11;
		term = mfindc(m, ' ', i + 3);
		if (term < 0)
			return 12;
	}
	int rc = task_info(mt, m, it);
	if (rc)
		return rc;
	if (mt->want_key) {
		i = mfind(m, "key=", term);
		if (i >= 0) {
			it->has_keys = 1;
			long v = i + 4;
			if (at(m, v) == '"') {
				str_t q;
				long e;
				if (!quoted(m, v, &q, &e))
					return 44;
				add_key(it, q);
			} else {
				str_t raw = unescape(it, m, v);
				if (raw.n < 0)
					return 45;
				add_hex_keys(it, raw);
			}
		}
	}
	return 0;
}

static int m_user(const matcher_t *mt, const msg_t *m, int type, items_t *it)
{
	long term = 0, i, n = m->n;
	if (mt->want_pid) {
		i = mfind(m, "pid=", 0);
		if (i < 0)
			return 1;
		long sp = mfindc(m, ' ', i + 4);
		if (sp < 0)
			return 2;
		it->pid = m_strtoul(m, i + 4);
		it->has_pid = 1;
		term = sp;
	}
	if (mt->want_uid) {
		i = mfind(m, "uid=", term);
		if (i < 0)
			return 4;
		term = mfindc(m, ' ', i + 4);
		if (term < 0)
			return 5;
		set_uid(mt, it, id_at(m, i + 4));
	}
	if (mt->want_auid) {
		long ptr = auid_value(m, term);
		if (ptr < 0)
			return 7;
		term = mfindc(m, ' ', ptr);
		if (term < 0)
			return 8;
		set_auid(mt, it, id_at(m, ptr));
	}
	if (mt->want_gid && (type == K_ADD_GROUP || type == K_DEL_GROUP || type == K_GRP_MGMT)) {
		i = mfind(m, " id=", term);
		if (i < 0 && type == K_GRP_MGMT)
			i = mfind(m, "gid=", term);
		if (i >= 0) {
			term = mfindc(m, ' ', i + 4);
			if (term < 0)
				return 31;
			it->gid = id_at(m, i + 4);
		}
	}
	if (mt->want_uid) {
		/* ausearch's second look for a uid (USER_LOGIN's uid= inside msg='...') */
		i = mfind(m, "uid=", term);
		while (i > 0 && m->m[i - 1] == 'a') {
			term = i + 1;
			i = mfind(m, "uid=", term);
		}
		int before = i > 0 ? (unsigned char)m->m[i - 1] : -1;
		if (i >= 0 && before != 's' && before != 'u') {
			if (before != '\'' && before != ' ')
				return 25;
			long ptr = i + 4;
			term = ptr;
			while (term < n && m->m[term] >= '0' && m->m[term] <= '9')
				term++;
			if (term == ptr)
				return 14;
			set_uid(mt, it, (unsigned int)m_strtoul(m, ptr));
		}
	}
	long mptr = term + 1;
	if (mt->want_comm) {
		i = mfind(m, "comm=", mptr);
		if (i >= 0) {
			long v = i + 5;
			if (at(m, v) == '"') {
				if (!quoted(m, v, &it->comm, &term))
					return 16;
			} else
				it->comm = unescape(it, m, v);
		}
	}
	i = mfind(m, "acct=", mptr);
	if (i >= 0) {
		long ptr = i + 5;
		term = ptr + 1;
		if (at(m, ptr) == '"') {
			while (term < n && m->m[term] != '"')
				term++;
		} else {
			long end = ptr;
			while (end < n && m->m[end] != ' ')
				end++;
			term = end;
		}
	}
	mptr = term + 1;
	if (mt->want_exe) {
		i = mfind(m, "exe=", mptr);
		if (i >= 0) {
			long v = i + 4;
			if (at(m, v) == '"') {
				if (!quoted(m, v, &it->exe, &term))
					return 26;
			} else {
				long end = v;
				while (end < n && m->m[end] != ' ')
					end++;
				int legacy = 0;
				for (long k = v; k < end; k++)
					if (!is_hexc((unsigned char)m->m[k]))
						legacy = 1;
				it->exe = legacy ? (str_t){m->m + v, end - v} : unescape(it, m, v);
			}
		}
	}
	if (mt->want_success) {
		i = mfind(m, "res=", mptr);
		if (i >= 0) {
			if (mfindc(m, '\'', i + 4) < 0)
				return 21;
			it->success = (m->n - (i + 4) >= 6 && memcmp(m->m + i + 4, "failed", 6) == 0)
					      ? S_FAILED
					      : S_SUCCESS;
		} else {
			i = mfind(m, "result=", mptr);
			if (i >= 0) {
				long close = mfindc(m, ')', i + 7);
				if (close < 0)
					return 22;
				long len = close - (i + 7);
				int ok = len == 7 && strncasecmp(m->m + i + 7, "success", 7) == 0;
				it->success = ok ? S_SUCCESS : S_FAILED;
			}
		}
	}
	return 0;
}

static int m_avc(const matcher_t *mt, const msg_t *m, int type, items_t *it)
{
	long term = 0, i = mfind(m, "avc: ", 0);
	if (i >= 0) {
		long brace = mfindc(m, '{', i + 5);
		if (brace >= 0) {
			if (mt->want_success) {
				const char *d = memmem(m->m + i + 5, (size_t)(brace - (i + 5)), "denied", 6);
				it->success = d ? S_FAILED : S_SUCCESS;
			}
			long close = mfindc(m, '}', brace + 1);
			if (close < 0)
				return 2;
			term = close;
			while (term > 0 && m->m[term - 1] == ' ')
				term--;
		}
	}
	if (type == K_USER_AVC) {
		int rc = m_user(mt, m, type, it);
		return rc > 20 ? 0 : rc;
	}
	if (mt->want_pid) {
		i = mfind(m, "pid=", term);
		if (i >= 0) {
			long sp = mfindc(m, ' ', i + 4);
			if (sp < 0)
				return 3;
			it->pid = m_strtoul(m, i + 4);
			it->has_pid = 1;
			term = sp;
		}
	}
	if (mt->want_comm && it->comm.n < 0) {
		i = mfind(m, "comm=", term);
		if (i < 0)
			return 5;
		long v = i + 5;
		if (at(m, v) == '"') {
			if (!quoted(m, v, &it->comm, &term))
				return 6;
		} else {
			it->comm = unescape(it, m, v);
			term = v + 6;
		}
	}
	if (mfind(m, "tclass=", term) < 0)
		return 9;
	return 0;
}

static int m_login(const matcher_t *mt, const msg_t *m, items_t *it)
{
	long term = 0, i;
	if (mt->want_pid) {
		i = mfind(m, "pid=", 0);
		if (i < 0)
			return 1;
		long sp = mfindc(m, ' ', i + 4);
		if (sp < 0)
			return 2;
		it->pid = m_strtoul(m, i + 4);
		it->has_pid = 1;
		term = sp;
	}
	if (mt->want_uid) {
		i = mfind(m, "uid=", term);
		if (i < 0)
			return 4;
		term = mfindc(m, ' ', i + 4);
		if (term < 0)
			return 5;
		set_uid(mt, it, id_at(m, i + 4));
	}
	if (mt->want_auid) {
		long ptr;
		i = mfind(m, "new auid=", term);
		ptr = i + 9;
		if (i < 0) {
			i = mfind(m, " auid=", term);
			ptr = i + 6;
			if (i < 0) {
				i = mfind(m, "new loginuid=", term);
				ptr = i + 13;
				if (i < 0)
					return 7;
			}
		}
		term = mfindc(m, ' ', ptr);
		set_auid(mt, it, id_at(m, ptr));
		if (term < 0)
			term = 0;
	}
	if (mt->want_success) {
		i = mfind(m, "res=", term);
		it->success = i >= 0 ? (long long)m_strtoul(m, i + 4) : S_SUCCESS;
	}
	return 0;
}

static int res_word(const msg_t *m, long start, items_t *it)
{
	long i = mfind(m, "res=", start);
	if (i >= 0) {
		long end = i + 4;
		while (end < m->n && ((m->m[end] >= 'A' && m->m[end] <= 'Z') ||
				      (m->m[end] >= 'a' && m->m[end] <= 'z')))
			end++;
		if (end == i + 4)
			return 12;
		long len = end - (i + 4);
		int failed = len >= 6 && memcmp(m->m + i + 4, "failed", 6) == 0;
		it->success = failed ? S_FAILED : S_SUCCESS;
	}
	return 0;
}

static int m_daemon1(const matcher_t *mt, const msg_t *m, items_t *it)
{
	long mptr = mfindc(m, ')', 0);
	if (mptr < 0)
		mptr = 0;
	long term = mptr, i;
	if (mt->want_auid) {
		i = mfind(m, "auid=", mptr);
		if (i < 0)
			return 1;
		term = mfindc(m, ' ', i + 5);
		if (term < 0)
			return 2;
		set_auid(mt, it, id_at(m, i + 5));
	}
	if (mt->want_pid) {
		i = mfind(m, "pid=", term);
		if (i < 0)
			return 4;
		term = mfindc(m, ' ', i + 4);
		if (term < 0)
			return 5;
		it->pid = m_strtoul(m, i + 4);
		it->has_pid = 1;
	}
	if (mt->want_uid) {
		i = mfind(m, " uid=", term);
		if (i >= 0) {
			long sp = mfindc(m, ' ', i + 5);
			if (sp < 0)
				return 7;
			it->uid = id_at(m, i + 5);
			it->uid_set = 1;
			term = sp;
		}
	}
	if (mt->want_success)
		return res_word(m, mptr, it);
	return 0;
}

static int m_daemon2(const matcher_t *mt, const msg_t *m, items_t *it)
{
	if (mt->want_success)
		return res_word(m, 0, it) ? 2 : 0;
	return 0;
}

static int m_simple(const matcher_t *mt, const msg_t *m, int type, items_t *it)
{
	long term = 0, i;
	if (mt->want_auid) {
		i = mfind(m, "auid=", 0);
		if (i < 0 && type != K_CONFIG_CHANGE)
			return 1;
		if (i >= 0) {
			long sp = mfindc(m, ' ', i + 5);
			set_auid(mt, it, id_at(m, i + 5));
			term = sp >= 0 ? sp : i + 5;
		}
	}
	if (mt->want_key) {
		i = mfind(m, "key=", term);
		if (i >= 0) {
			it->has_keys = 1;
			long v = i + 4;
			if (at(m, v) == '"') {
				str_t q;
				long e;
				if (!quoted(m, v, &q, &e))
					return 6;
				add_key(it, q);
				term = e;
			} else {
				str_t raw = unescape(it, m, v);
				if (raw.n < 0)
					return 8;
				add_hex_keys(it, raw);
			}
		}
	}
	if (type == K_CONFIG_CHANGE)
		it->success = S_SUCCESS;
	if (mt->want_success) {
		i = mfind(m, "res=", term);
		if (i >= 0)
			it->success = (long long)m_strtoul(m, i + 4);
	}
	return 0;
}

/* rc, found?, value; term updated when quoted */
static int string_field(items_t *it, const msg_t *m, const char *name, long *term, int open_rc,
			int *found, str_t *val)
{
	long i = mfind(m, name, *term);
	*found = 0;
	if (i < 0)
		return 0;
	*found = 1;
	long v = i + (long)strlen(name);
	if (at(m, v) == '"') {
		long e;
		if (!quoted(m, v, val, &e)) {
			*val = none();
			return open_rc;
		}
		*term = e;
		return 0;
	}
	*val = unescape(it, m, v);
	return 0;
}

static int m_kernel_anom(const matcher_t *mt, const msg_t *m, int type, items_t *it)
{
	long term = 0, i;
	int found, rc;
	str_t val;
	if (mt->want_auid) {
		i = mfind(m, "auid=", 0);
		if (i < 0)
			return 1;
		long sp = mfindc(m, ' ', i + 5);
		set_auid(mt, it, id_at(m, i + 5));
		term = sp >= 0 ? sp : i + 5;
	}
	if (mt->want_uid) {
		i = mfind(m, "uid=", term);
		if (i >= 0) {
			term = mfindc(m, ' ', i + 4);
			if (term < 0)
				return 3;
			set_uid(mt, it, id_at(m, i + 4));
		}
	}
	if (mt->want_gid) {
		i = mfind(m, "gid=", term);
		if (i >= 0) {
			term = mfindc(m, ' ', i + 4);
			if (term < 0)
				return 5;
			it->gid = id_at(m, i + 4);
		}
	}
	if (type == K_ANOM_PROMISCUOUS)
		return 0;
	if (mt->want_pid) {
		i = mfind(m, "pid=", term);
		if (i >= 0) {
			long sp = mfindc(m, ' ', i + 4);
			if (sp < 0)
				return 10;
			it->pid = m_strtoul(m, i + 4);
			it->has_pid = 1;
			term = sp;
		}
	}
	if (mt->want_comm) {
		rc = string_field(it, m, "comm=", &term, 12, &found, &val);
		if (rc)
			return rc;
		if (found)
			it->comm = val;
	}
	if (mt->want_exe) {
		rc = string_field(it, m, "exe=", &term, 13, &found, &val);
		if (rc)
			return rc;
		if (found)
			it->exe = val;
		else if (type != K_ANOM_ABEND)
			return 14;
	}
	if (type == K_SECCOMP) {
		i = mfind(m, "arch=", term);
		if (i < 0)
			return 0;
		term = mfindc(m, ' ', i + 5);
		if (term < 0)
			return 15;
		it->arch = m_hex(m, i + 5);
		i = mfind(m, "syscall=", term);
		if (i < 0)
			return 17;
		term = mfindc(m, ' ', i + 8);
		if (term < 0)
			return 18;
		it->syscall = (long long)m_strtoul(m, i + 8);
	}
	if (mt->want_success) {
		i = mfind(m, "res=", term);
		if (i >= 0)
			it->success = (long long)m_strtoul(m, i + 4);
	}
	return 0;
}

static int m_integrity(const matcher_t *mt, const msg_t *m, items_t *it)
{
	long term = 0, i = mfind(m, "pid=", 0);
	int found, rc;
	str_t val;
	if (i >= 0) {
		long sp = mfindc(m, ' ', i + 4);
		if (sp < 0)
			return 1;
		it->pid = m_strtoul(m, i + 4);
		it->has_pid = 1;
		term = sp;
	}
	if (mt->want_uid) {
		i = mfind(m, " uid=", term);
		if (i >= 0) {
			/* ausearch reads from the '=' here, so the uid is always 0 */
			term = mfindc(m, ' ', i + 4);
			if (term < 0)
				return 3;
			set_uid(mt, it, id_at(m, i + 4));
		}
	}
	if (mt->want_auid) {
		i = mfind(m, "auid=", 0);
		if (i >= 0) {
			term = mfindc(m, ' ', i + 5);
			if (term < 0)
				return 5;
			set_auid(mt, it, id_at(m, i + 5));
		}
	}
	if (mt->want_comm) {
		rc = string_field(it, m, "comm=", &term, 7, &found, &val);
		if (rc)
			return rc;
		if (found)
			it->comm = val;
	}
	if (mt->want_success) {
		i = mfind(m, "res=", term);
		if (i >= 0)
			it->success = (long long)m_strtoul(m, i + 4);
	}
	return 0;
}

static int m_tty(const matcher_t *mt, const msg_t *m, items_t *it)
{
	long term = 0, i;
	int found, rc;
	str_t val;
	if (mt->want_pid) {
		i = mfind(m, "pid=", 0);
		if (i >= 0) {
			long sp = mfindc(m, ' ', i + 4);
			if (sp < 0)
				return 1;
			it->pid = m_strtoul(m, i + 4);
			it->has_pid = 1;
			term = sp;
		}
	}
	if (mt->want_uid) {
		i = mfind(m, " uid=", term);
		if (i >= 0) {
			/* ausearch reads from the '=' here, so the uid is always 0 */
			term = mfindc(m, ' ', i + 4);
			if (term < 0)
				return 3;
			set_uid(mt, it, id_at(m, i + 4));
		}
	}
	if (mt->want_auid) {
		i = mfind(m, "auid=", term);
		if (i < 0)
			return 5;
		long sp = mfindc(m, ' ', i + 5);
		set_auid(mt, it, id_at(m, i + 5));
		term = sp >= 0 ? sp : i + 5;
	}
	if (mt->want_comm) {
		rc = string_field(it, m, "comm=", &term, 11, &found, &val);
		if (rc)
			return rc;
		if (found)
			it->comm = val;
	}
	return 0;
}

static int m_kernel(const matcher_t *mt, const msg_t *m, items_t *it)
{
	long term = 0, i;
	int found, rc;
	str_t val;
	if (mt->want_pid && !it->has_pid) {
		i = mfind(m, " pid=", 0);
		if (i < 0)
			return 54;
		long sp = mfindc(m, ' ', i + 5);
		if (sp < 0)
			return 52;
		it->pid = m_strtoul(m, i + 5);
		it->has_pid = 1;
		term = sp;
	}
	if (mt->want_uid && !it->uid_set) {
		i = mfind(m, "uid=", term);
		if (i >= 0) {
			term = mfindc(m, ' ', i + 4);
			if (term < 0)
				return 55;
			set_uid(mt, it, id_at(m, i + 4));
		} else
			set_uid(mt, it, 0);
	}
	if (mt->want_auid && it->loginuid == AUID_UNSET) {
		i = mfind(m, "auid=", term);
		if (i >= 0) {
			term = mfindc(m, ' ', i + 5);
			if (term < 0)
				return 57;
			set_auid(mt, it, id_at(m, i + 5));
		} else
			set_auid(mt, it, ID_UNSET);
	}
	if (mt->want_comm && it->comm.n < 0) {
		rc = string_field(it, m, "comm=", &term, 65, &found, &val);
		if (rc)
			return rc;
		if (!found)
			return 66;
		it->comm = val;
	}
	if (mt->want_exe && it->exe.n < 0) {
		long t0 = 0;
		rc = string_field(it, m, "exe=", &t0, 67, &found, &val);
		if (rc)
			return rc;
		it->exe = found ? val : (str_t){"(null)", 6};
	}
	if (mt->want_success) {
		i = mfind(m, "res=", term);
		if (i >= 0)
			it->success = (long long)m_strtoul(m, i + 4);
	}
	return 0;
}

static int m_record(const matcher_t *mt, const msg_t *m, int t, items_t *it)
{
	if (t == K_SYSCALL)
		return m_syscall(mt, m, it);
	if (t == K_AVC || t == K_USER_AVC)
		return m_avc(mt, m, t, it);
	if (t == K_USER || (t >= 1100 && t <= 1106) || (t >= 1108 && t <= 1199) ||
	    (t >= 2100 && t <= 2999))
		return m_user(mt, m, t, it);
	if (t == K_LOGIN)
		return m_login(mt, m, it);
	if ((t >= 1200 && t <= 1203) || t == 1205 || t == 1206)
		return m_daemon1(mt, m, it);
	if (t == K_DAEMON_ACCEPT || t == K_DAEMON_CLOSE)
		return m_daemon2(mt, m, it);
	if (t == K_CONFIG_CHANGE || (t >= K_MAC_POLICY_LOAD && t <= K_MAC_UNLBL_STCDEL))
		return m_simple(mt, m, t, it);
	if (t == K_FEATURE_CHANGE || t == K_ANOM_LINK)
		return task_info(mt, m, it);
	if (t == K_SECCOMP || t == K_ANOM_PROMISCUOUS || t == K_ANOM_ABEND)
		return m_kernel_anom(mt, m, t, it);
	if (t >= K_INTEGRITY_DATA && t <= K_INTEGRITY_RULE)
		return m_integrity(mt, m, it);
	if (t == K_NETFILTER_CFG || t == K_EVENT_LISTENER)
		return m_kernel(mt, m, it);
	if (t == K_TTY)
		return m_tty(mt, m, it);
	return 0;
}

static int strmatch(const opts_t *o, const char *needle, str_t hay)
{
	size_t nl = strlen(needle);
	if (o->whole_word)
		return hay.n == (long)nl && memcmp(needle, hay.p, nl) == 0;
	return memmem(hay.p, (size_t)hay.n, needle, nl) != NULL;
}

/* ausearch's user_match() and group_match(): -ua/-ga are an "or", else "and" */
static int ids_match(const matcher_t *mt, const items_t *it)
{
	const opts_t *o = mt->o;
	if (mt->want_names) {
		const char *names[] = {o->uid_name, o->euid_name, o->auid_name};
		const str_t got[] = {it->tuid, it->teuid, it->tauid};
		int any = 0, all = 1;
		for (int k = 0; k < 3; k++) {
			if (!names[k])
				continue;
			int same = got[k].n == (long)strlen(names[k]) &&
				   memcmp(got[k].p, names[k], (size_t)got[k].n) == 0;
			any |= same;
			all &= same;
		}
		if (!(o->uid_all ? any : all))
			return 0;
	} else if (o->uid_all) {
		if (!(o->ev_uid == it->uid || o->ev_euid == it->euid || o->ev_auid == it->loginuid))
			return 0;
	} else if ((mt->want_uid && o->ev_uid != it->uid) ||
		   (mt->want_euid && o->ev_euid != it->euid) ||
		   (mt->want_auid && o->ev_auid != it->loginuid))
		return 0;
	if (o->gid_all)
		return o->ev_gid == it->gid || o->ev_egid == it->egid;
	return !((mt->want_gid && o->ev_gid != it->gid) || (mt->want_egid && o->ev_egid != it->egid));
}

/* Does the assembled event match the criteria beyond types, serial and time? */
static int match_event(scan_t *s, const ev_t *e)
{
	const opts_t *o = &s->o;
	matcher_t mt = {o,
			o->has_pid,
			o->comm != NULL,
			o->exe != NULL,
			o->key != NULL,
			o->has_success,
			o->ev_uid != ID_UNSET || o->uid_name,
			o->ev_euid != ID_UNSET || o->euid_name,
			o->ev_auid != AUID_UNSET || o->auid_name,
			o->ev_gid != ID_UNSET,
			o->ev_egid != ID_UNSET,
			o->uid_name || o->euid_name || o->auid_name,
			NULL,
			0,
			o->has_syscall};
	if (!(mt.want_pid || mt.want_comm || mt.want_exe || mt.want_key || mt.want_success ||
	      mt.want_syscall || o->has_exit ||
	      mt.want_uid || mt.want_euid || mt.want_auid || mt.want_gid || mt.want_egid ||
	      o->uid_all || o->gid_all))
		return 1;
	items_t it;
	memset(&it, 0, sizeof(it));
	it.uid = it.euid = it.gid = it.egid = ID_UNSET;
	it.loginuid = AUID_UNSET;
	it.tuid = it.teuid = it.tauid = none();
	if (mt.want_names && e->nrec > 0 && (e->nrec == 1 || e->recs[0].type == K_SYSCALL)) {
		const rec_t *r = &e->recs[0];
		if (r->full > r->raw) {
			mt.interp = r->p + r->raw + 1;
			mt.interp_n = r->full - r->raw - 1;
		}
	}
	it.comm = none();
	it.exe = none();
	it.success = S_UNSET;
	int ok = 1;
	for (int i = 0; i < e->nrec && ok; i++) {
		msg_t m = {e->recs[i].p, e->recs[i].raw};
		if (m_record(&mt, &m, e->recs[i].type, &it))
			ok = 0;
	}
	if (ok && !ids_match(&mt, &it))
		ok = 0;
	if (ok && mt.want_pid && (!it.has_pid || it.pid != o->pid))
		ok = 0;
	if (ok && mt.want_success && it.success != (o->success ? S_SUCCESS : S_FAILED))
		ok = 0;
	if (ok && o->has_exit && (!it.exit_set || it.exit != o->exit))
		ok = 0;
	if (ok && mt.want_syscall &&
	    (it.syscall != o->syscall || (o->syscall_arch && it.arch != o->syscall_arch)))
		ok = 0;
	if (ok && mt.want_exe && (it.exe.n < 0 || !strmatch(o, o->exe, it.exe)))
		ok = 0;
	if (ok && mt.want_comm && (it.comm.n < 0 || !strmatch(o, o->comm, it.comm)))
		ok = 0;
	if (ok && mt.want_key) {
		int any = 0;
		for (int k = 0; k < it.nkeys && !any; k++)
			any = strmatch(o, o->key, it.keys[k]);
		ok = it.has_keys && any;
	}
	items_free(&it);
	return ok;
}


/* ---------------------------------------------------------------------------------- */
/* -i: ausearch's output_interpreted_node, with libauparse's own decoders (the same
 * functions ausearch calls), loaded with dlopen. svirt.audit.auparse_interp is the same
 * walk in Python; the tests compare both with ausearch. */

typedef struct {
	unsigned int machine;
	int syscall;
	unsigned long long a0;
	unsigned long long a1;
	const char *cwd;
	const char *name;
	const char *val;
} idata_t;

static int (*ap_adjust)(int, const char *, const char *);
static char *(*ap_do)(int, const idata_t *, int);
static void (*ap_load)(const char *);
static void (*ap_unload)(void);
static int (*au_elf_to_machine)(unsigned int);
static int (*au_detect_machine)(void);
static const char *(*au_type_name)(int);
static int ap_state; /* 0 untried, 1 loaded, -1 missing */
static unsigned long long g_a0, g_a1;

static int load_auparse(void)
{
	if (ap_state)
		return ap_state > 0;
	ap_state = -1;
	void *au = dlopen("libauparse.so.0", RTLD_NOW | RTLD_GLOBAL);
	void *la = dlopen("libaudit.so.1", RTLD_NOW | RTLD_GLOBAL);
	if (!au || !la)
		return 0;
	*(void **)&ap_adjust = dlsym(au, "auparse_interp_adjust_type");
	*(void **)&ap_do = dlsym(au, "auparse_do_interpretation");
	*(void **)&ap_load = dlsym(au, "_auparse_load_interpretations");
	*(void **)&ap_unload = dlsym(au, "_auparse_free_interpretations");
	*(void **)&au_elf_to_machine = dlsym(la, "audit_elf_to_machine");
	*(void **)&au_detect_machine = dlsym(la, "audit_detect_machine");
	*(void **)&au_type_name = dlsym(la, "audit_msg_type_to_name");
	if (!ap_adjust || !ap_do || !ap_load || !ap_unload || !au_elf_to_machine ||
	    !au_detect_machine || !au_type_name)
		return 0;
	ap_state = 1;
	return 1;
}

int svs_interpret_available(void)
{
	return load_auparse();
}

/* Memoised answers of auparse_do_interpretation: a pure function of its inputs (the
 * record's ENRICHED names included), which costs microseconds (name lookups). */
#define ICACHE_SIZE (1 << 16)
typedef struct {
	char *key;
	size_t klen;
	char *val;
} icache_t;
static icache_t *icache;
static int icache_n;
static const char *cur_interp;

static char *interpret_cached(int type, const idata_t *id)
{
	char kbuf[8192];
	int named_arg = id->name[0] == 'a' && id->name[1] >= '0' && id->name[1] <= '3' && !id->name[2];
	int n = snprintf(kbuf, sizeof(kbuf), "%d\x1f%s\x1f%s\x1f%u\x1f%d\x1f%llx\x1f%llx\x1f%s", type,
			 id->name, id->val, id->machine, id->syscall, named_arg ? id->a0 : 0ull,
			 named_arg ? id->a1 : 0ull, cur_interp ? cur_interp : "");
	if (n < 0 || n >= (int)sizeof(kbuf))
		return ap_do(type, id, 1);
	if (!icache)
		icache = calloc(ICACHE_SIZE, sizeof(*icache));
	unsigned h = fnv(kbuf, n) & (ICACHE_SIZE - 1);
	while (icache[h].key) {
		if (icache[h].klen == (size_t)n && memcmp(icache[h].key, kbuf, (size_t)n) == 0)
			return strdup(icache[h].val);
		h = (h + 1) & (ICACHE_SIZE - 1);
	}
	char *out = ap_do(type, id, 1);
	if (!out)
		return NULL;
	if (icache_n >= ICACHE_SIZE / 2) {
		for (int i = 0; i < ICACHE_SIZE; i++) {
			free(icache[i].key);
			free(icache[i].val);
		}
		memset(icache, 0, sizeof(*icache) * ICACHE_SIZE);
		icache_n = 0;
		h = fnv(kbuf, n) & (ICACHE_SIZE - 1);
	}
	icache[h].key = memcpy(malloc((size_t)n), kbuf, (size_t)n);
	icache[h].klen = (size_t)n;
	icache[h].val = strdup(out);
	icache_n++;
	return out;
}

static void interp_field(scan_t *s, int rtype, char *name, char *val, int comma, long *machine,
			 int *cur_syscall)
{
	while (*name == ' ' || *name == '(')
		name++;
	if (strcmp(name, "acct") == 0) {
		size_t len = strlen(val);
		if (len && val[len - 1] == ':')
			val[len - 1] = 0;
	}
	int type = ap_adjust(rtype, name, val);
	idata_t id;
	if (rtype == K_SYSCALL || rtype == K_SECCOMP) {
		if (*machine == -1)
			*machine = au_detect_machine();
		if (strcmp(name, "arch") == 0)
			*machine = au_elf_to_machine((unsigned int)strtoul(val, NULL, 16));
		if (*cur_syscall < 0 && strcmp(name, "syscall") == 0)
			*cur_syscall = (int)strtoul(val, NULL, 10);
		id.syscall = *cur_syscall;
	} else
		id.syscall = 0;
	id.machine = (unsigned int)*machine;
	id.a0 = g_a0;
	id.a1 = g_a1;
	id.cwd = NULL;
	id.name = name;
	id.val = val;
	char *out = interpret_cached(type, &id);
	const char *text = out ? out : "";
	if (type == 0) {
		out_put(s, val, strlen(val));
		out_put(s, comma ? "," : " ", 1);
	} else if (strcmp(name, "key") == 0) {
		char *ptr = out ? out : (char *)"", *sep;
		int count = 0;
		while ((sep = strchr(ptr, '\x01'))) {
			*sep = 0;
			if (count++ == 0)
				out_put(s, ptr, strlen(ptr));
			else {
				out_put(s, " key=", 5);
				out_put(s, ptr, strlen(ptr));
			}
			ptr = sep + 1;
		}
		if (count == 0) {
			out_put(s, text, strlen(text));
			out_put(s, " ", 1);
		} else {
			out_put(s, " key=", 5);
			out_put(s, ptr, strlen(ptr));
			out_put(s, " ", 1);
		}
	} else if (type == 20) { /* AUPARSE_TYPE_TTY_DATA */
		out_put(s, text, strlen(text));
	} else {
		out_put(s, text, strlen(text));
		out_put(s, " ", 1);
	}
	free(out);
}

static unsigned long long arg_of(const char *p, size_t n, const char *name)
{
	const char *hit = memmem(p, n, name, strlen(name));
	if (!hit)
		return 0;
	return strtoull(hit + strlen(name), NULL, 16);
}

static void interp_record(scan_t *s, const ev_t *e, const rec_t *r)
{
	char *buf = malloc((size_t)r->raw + 1);
	memcpy(buf, r->p, (size_t)r->raw);
	buf[r->raw] = 0;
	char *interp = NULL;
	if (r->full > r->raw) {
		interp = malloc((size_t)(r->full - r->raw));
		memcpy(interp, r->p + r->raw + 1, (size_t)(r->full - r->raw - 1));
		interp[r->full - r->raw - 1] = 0;
	}
	char *str = buf, *ptr;
	long machine = -1;
	int cur_syscall = -1, found = 0, comma = 0;
	if (e->node) {
		ptr = strchr(str, ' ');
		if (ptr)
			str = ptr + 1;
	}
	ptr = strchr(str, '(');
	if (!ptr)
		goto done;
	*ptr++ = 0;
	const char *tname = r->type >= 0 ? au_type_name(r->type) : NULL;
	if (e->node) {
		out_put(s, "node=", 5);
		out_put(s, e->node, (size_t)e->nodelen);
		out_put(s, " ", 1);
	}
	if (tname) {
		out_put(s, "type=", 5);
		out_put(s, tname, strlen(tname));
		out_put(s, " msg=audit(", 11);
	} else {
		out_put(s, str, strlen(str));
		out_put(s, "(", 1);
	}
	str = strchr(ptr, ')');
	if (!str)
		goto done;
	*str++ = 0;
	{
		char tmp[64];
		time_t t = (time_t)e->sec;
		struct tm tm;
		size_t n = 0;
		if (localtime_r(&t, &tm))
			n = strftime(tmp, sizeof(tmp), "%x %T", &tm);
		out_put(s, tmp, n);
		n = (size_t)snprintf(tmp, sizeof(tmp), ".%03ld:%lu) ", e->milli, e->serial);
		out_put(s, tmp, n);
	}
	if (r->type == K_SYSCALL) {
		g_a0 = arg_of(r->p, (size_t)r->raw, " a0=");
		g_a1 = arg_of(r->p, (size_t)r->raw, " a1=");
	}
	cur_interp = interp;
	if (interp)
		ap_load(interp);
	while (str && *str && (ptr = strchr(str, '='))) {
		char *name, *val;
		comma = 0;
		found = 1;
		name = ptr;
		while (*name != ' ' && name > str)
			--name;
		*ptr++ = 0;
		out_put(s, str, strlen(str));
		out_put(s, "=", 1);
		if (strcmp(name, "msg") == 0) {
			str = ptr;
			continue;
		}
		if (*name == '\'')
			name++;
		if (*ptr == '\'' || *ptr == '"') {
			str = strchr(ptr + 1, *ptr);
			if (str) {
				str++;
				if (*str)
					*str++ = 0;
			}
		} else {
			str = strchr(ptr, ',');
			val = strchr(ptr, ' ');
			if (str && val && (str < val)) {
				if (ap_adjust(r->type, name, val) == 32) {
					str = val;
					*str++ = 0;
				} else {
					*str++ = 0;
					comma = 1;
				}
			} else if (str && (val == NULL)) {
				if (ap_adjust(r->type, name, ptr) == 32)
					str = NULL;
				else {
					*str++ = 0;
					comma = 1;
				}
			} else if (val) {
				str = val;
				*str++ = 0;
			}
		}
		val = ptr;
		interp_field(s, r->type, name, val, comma, &machine, &cur_syscall);
	}
	if (interp)
		ap_unload();
	cur_interp = NULL;
	if ((!found && ptr == NULL && str) || comma)
		out_put(s, str, strlen(str));
	out_put(s, "\n", 1);
done:
	free(buf);
	free(interp);
}

static void interp_event(scan_t *s, const ev_t *e)
{
	if (!load_auparse())
		return; /* the caller checks svs_interpret_available() first */
	out_put(s, "----\n", 5);
	int last = e->nrec - 1;
	if (e->recs[last].type >= 1200 && e->recs[last].type < K_SYSCALL) {
		interp_record(s, e, &e->recs[last]);
		return;
	}
	for (int i = last; i >= 0; i--)
		interp_record(s, e, &e->recs[i]);
}

static void emit(scan_t *s, ev_t *e)
{
	if (s->st.stopped)
		return;
	if (!may_match(s, e) || !match_event(s, e))
		return;
	if (s->o.decided) {
		s->st.matched++;
		if (s->o.format == 2) {
			interp_event(s, e);
		} else if (s->o.format == 0) {
			for (int i = 0; i < e->nrec; i++) {
				const rec_t *r = &e->recs[i];
				out_put(s, r->p, r->full);
				if (e->enriched && r->raw == r->full)
					out_put(s, "\x1d\n", 2);
				else
					out_put(s, "\n", 1);
			}
		} else {
			char tbuf[64];
			time_t t = (time_t)e->sec;
			struct tm tm;
			out_put(s, "----\ntime->", 11);
			if (localtime_r(&t, &tm)) {
				size_t n = strftime(tbuf, sizeof(tbuf), "%a %b %e %H:%M:%S %Y\n", &tm);
				out_put(s, tbuf, n);
			} else {
				int n = snprintf(tbuf, sizeof(tbuf), "%lld\n", e->sec);
				out_put(s, tbuf, (size_t)n);
			}
			/* ausearch prints only the last record of a daemon event */
			int last = e->nrec - 1, daemon = e->recs[last].type >= 1200 &&
							 e->recs[last].type < T_SYSCALL;
			for (int i = last; i >= (daemon ? last : 0); i--) {
				const rec_t *r = &e->recs[i];
				out_put(s, r->p, r->raw);
				out_put(s, "\n", 1);
			}
		}
		return;
	}
	if (s->nbrec + e->nrec > s->brcap) {
		while (s->nbrec + e->nrec > s->brcap)
			s->brcap = s->brcap ? s->brcap * 2 : 4096;
		s->brec = realloc(s->brec, sizeof(long long) * 5 * s->brcap);
	}
	if (s->nbev + 1 > s->bevcap) {
		s->bevcap = s->bevcap ? s->bevcap * 2 : 1024;
		s->bev = realloc(s->bev, sizeof(long long) * 5 * s->bevcap);
	}
	long long *ev = s->bev + 5 * s->nbev++;
	ev[0] = s->nbrec;
	ev[1] = e->nrec;
	ev[2] = e->sec;
	ev[3] = e->milli;
	ev[4] = (long long)e->serial;
	for (int i = 0; i < e->nrec; i++) {
		long long *r = s->brec + 5 * s->nbrec++;
		r[0] = e->recs[i].file;
		r[1] = e->recs[i].off;
		r[2] = e->recs[i].full;
		r[3] = e->recs[i].raw;
		r[4] = e->recs[i].type;
	}
}

/* The batch gathered so far (Python reads it, then calls svs_clear_batch). */
long long svs_batch(scan_t *s, long long **events, long long **records)
{
	*events = s->bev;
	*records = s->brec;
	return s->nbev;
}

void svs_clear_batch(scan_t *s)
{
	s->nbev = 0;
	s->nbrec = 0;
}

static void release(scan_t *s)
{
	while (s->hhn && s->hh[0]->complete) {
		ev_t *e = hh_pop(s);
		emit(s, e);
		fs_push(s, e->slot);
		free(e->recs);
		free(e);
	}
}

/* ---------------------------------------------------------------------------------- */
/* one record */

static void add_record(scan_t *s, rec_t r, long long sec, long milli, unsigned long serial,
		       const char *node, int nodelen)
{
	ev_t **pp = find_slot(s, sec, milli, serial, node, nodelen);
	if (*pp) {
		add_rec(*pp, r);
		return;
	}
	if (r.type == T_EOE)
		return;
	s->st.events++;
	ev_t *e = calloc(1, sizeof(*e));
	e->sec = sec;
	e->milli = milli;
	e->serial = serial;
	e->node = node;
	e->nodelen = nodelen;
	e->seq = ++s->seq;
	e->slot = s->fsn ? fs_pop(s) : s->next_slot++;
	e->first_type = r.type;
	add_rec(e, r);
	while (s->thn && s->th[0].sec + WINDOW <= sec) {
		tnode_t t = th_pop(s);
		if (!t.ev->complete) {
			unlink_building(s, t.ev);
			t.ev->complete = 1;
		}
	}
	if (single_record(r.type)) {
		e->complete = 1;
	} else {
		e->hnext = NULL;
		pp = find_slot(s, sec, milli, serial, node, nodelen);
		*pp = e;
		if (++s->nbuilding > (int)(s->hmask + 1))
			grow_hash(s);
		th_push(s, (tnode_t){sec, e->seq, e});
	}
	hh_push(s, e);
	if (s->hh[0]->complete)
		release(s);
}

static void note_malformed(scan_t *s, int file, long long lineno, long long off, int reason)
{
	s->st.malformed++;
	if (s->st.nexamples < MAX_EXAMPLES) {
		int i = s->st.nexamples++;
		s->st.example_file[i] = file;
		s->st.example_line[i] = lineno;
		s->st.example_off[i] = off;
		s->st.example_reason[i] = reason;
	}
}

static int is_separator(const char *p, size_t n)
{
	while (n && (*p == ' ' || *p == '\t' || *p == '\r')) {
		p++;
		n--;
	}
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
		n--;
	if (!n)
		return 1;
	return (n >= 4 && memcmp(p, "----", 4) == 0) || (n >= 6 && memcmp(p, "time->", 6) == 0) ||
	       (n >= 12 && memcmp(p, "<no matches>", 12) == 0);
}

/* Parse a header; returns 0 and fills the fields, or -1 (not a record), -2 (bad stamp). */
static int parse_header(scan_t *s, const char *p, size_t n, const char **node, int *nodelen,
			int *type, long long *sec, long *milli, unsigned long *serial)
{
	const char *end = p + n, *q = p;
	*node = NULL;
	*nodelen = 0;
	if (n >= 5 && memcmp(p, "node=", 5) == 0) {
		const char *sp = memchr(p, ' ', n);
		if (!sp)
			return -1;
		*node = p + 5;
		*nodelen = (int)(sp - p - 5);
		q = sp + 1;
	}
	if (end - q < 5 || memcmp(q, "type=", 5) != 0)
		return -1;
	const char *sp = memchr(q + 5, ' ', (size_t)(end - q - 5));
	if (!sp || end - sp < 11 || memcmp(sp + 1, "msg=audit(", 10) != 0)
		return -1;
	*type = type_id(s, q + 5, (int)(sp - q - 5));
	const char *t = sp + 11;
	long long v = 0;
	int d = 0;
	while (t < end && *t >= '0' && *t <= '9') {
		v = v * 10 + (*t++ - '0');
		d++;
	}
	if (!d || t >= end || *t != '.')
		return -2;
	*sec = v;
	t++;
	v = 0;
	d = 0;
	while (t < end && *t >= '0' && *t <= '9') {
		v = v * 10 + (*t++ - '0');
		d++;
	}
	if (!d || t >= end || *t != ':')
		return -2;
	*milli = (long)v;
	t++;
	unsigned long long u = 0;
	d = 0;
	while (t < end && *t >= '0' && *t <= '9') {
		u = u * 10 + (unsigned long long)(*t++ - '0');
		d++;
	}
	if (!d || t >= end || *t != ')')
		return -2;
	*serial = (unsigned long)u;
	return 0;
}

/* The seconds of the first record line at or after pos, or -1. */
static long long sec_after(scan_t *s, file_t *f, size_t pos, size_t *line_start)
{
	for (int tries = 0; tries < 64 && pos < f->size; tries++) {
		const char *p = f->map + pos;
		const char *nl = memchr(p, '\n', f->size - pos);
		size_t n = nl ? (size_t)(nl - p) : f->size - pos;
		const char *node;
		int nodelen, type;
		long long sec;
		long milli;
		unsigned long serial;
		if (parse_header(s, p, n, &node, &nodelen, &type, &sec, &milli, &serial) == 0) {
			*line_start = pos;
			return sec;
		}
		if (!nl)
			break;
		pos += n + 1;
	}
	return -1;
}

static void seek_start(scan_t *s, file_t *f)
{
	long long want = s->o.start - SEEK_MARGIN;
	size_t lo = 0, hi = f->size;
	while (hi - lo > (1 << 16)) {
		size_t mid = lo + (hi - lo) / 2;
		const char *nl = memchr(f->map + mid, '\n', f->size - mid);
		if (!nl)
			break;
		size_t ls;
		long long sec = sec_after(s, f, (size_t)(nl - f->map) + 1, &ls);
		if (sec < 0 || sec >= want)
			hi = mid;
		else
			lo = mid;
	}
	if (lo) {
		const char *nl = memchr(f->map + lo, '\n', f->size - lo);
		f->pos = nl ? (size_t)(nl - f->map) + 1 : f->size;
		f->seeked = 1;
		f->lineno = -1;
		s->st.bytes += (long long)f->pos;
	}
}

/* ---------------------------------------------------------------------------------- */
/* API */

scan_t *svs_new(const opts_t *o)
{
	scan_t *s = calloc(1, sizeof(*s));
	s->o = *o;
	unsigned size = 1024;
	while (size < (unsigned)o->ntypenames * 4)
		size *= 2;
	s->tmask = size - 1;
	s->tn = calloc(size, sizeof(*s->tn));
	s->tid = calloc(size, sizeof(int));
	s->tnlen = calloc(size, sizeof(int));
	for (int i = 0; i < o->ntypenames; i++) {
		int n = (int)strlen(o->type_names[i]);
		unsigned h = fnv(o->type_names[i], n) & s->tmask;
		while (s->tn[h])
			h = (h + 1) & s->tmask;
		s->tn[h] = o->type_names[i];
		s->tnlen[h] = n;
		s->tid[h] = o->type_ids[i];
	}
	s->hmask = 4095;
	s->hash = calloc(s->hmask + 1, sizeof(*s->hash));
	s->outcap = 1 << 20;
	s->out = malloc(s->outcap);
	s->scratch = malloc(MAX_LINE);
	tzset();
	return s;
}

/* Map a file; returns its index, or -errno. */
int svs_open(scan_t *s, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	char *map = NULL;
	if (st.st_size > 0) {
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			int e = errno;
			close(fd);
			return -e;
		}
		madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
	}
	close(fd);
	if (s->nfiles == s->fcap) {
		s->fcap = s->fcap ? s->fcap * 2 : 8;
		s->files = realloc(s->files, sizeof(file_t) * s->fcap);
	}
	file_t *f = &s->files[s->nfiles];
	memset(f, 0, sizeof(*f));
	f->map = map;
	f->size = map ? (size_t)st.st_size : 0;
	if (s->o.has_start && f->size)
		seek_start(s, f);
	return s->nfiles++;
}

/* Read up to max_bytes more of file idx; returns 1 while there is more, 0 at its end. */
int svs_run(scan_t *s, int idx, long long max_bytes)
{
	file_t *f = &s->files[idx];
	size_t stop = f->pos + (size_t)max_bytes;
	if (stop > f->size || max_bytes <= 0)
		stop = f->size;
	while (f->pos < f->size && !s->st.stopped && !f->done) {
		const char *p = f->map + f->pos;
		const char *nl = memchr(p, '\n', f->size - f->pos);
		size_t n = nl ? (size_t)(nl - p) : f->size - f->pos;
		int64_t off = (int64_t)f->pos;
		f->pos += n + (nl ? 1 : 0);
		s->st.lines++;
		if (!f->seeked)
			f->lineno++;
		int too_long = n > MAX_LINE;
		if (too_long)
			note_malformed(s, idx, f->lineno, off, 1);
		if (n > AUSEARCH_RECORD) /* ausearch keeps the head of a longer line */
			n = AUSEARCH_RECORD;
		{
			const char *node;
			int nodelen, type;
			long long sec;
			long milli;
			unsigned long serial;
			int rc = parse_header(s, p, n, &node, &nodelen, &type, &sec, &milli, &serial);
			if (rc == 0) {
				if (s->o.has_end && sec > s->o.end + SEEK_MARGIN) {
					f->done = 1;
					break;
				}
				if (!((s->o.has_start && sec < s->o.start) ||
				      (s->o.has_end && sec > s->o.end))) {
					const char *g = memchr(p, 0x1d, n);
					size_t raw = g ? (size_t)(g - p) : n;
					if (raw && p[raw - 1] == '\r' && !g)
						raw--;
					rec_t r = {p, (int32_t)raw, (int32_t)(g ? n : raw), type, idx, off};
					add_record(s, r, sec, milli, serial, node, nodelen);
				}
			} else if (!is_separator(p, n) && !too_long) {
				note_malformed(s, idx, f->lineno, off, rc == -2 ? 2 : 0);
			}
		}
		if (f->pos >= stop)
			break;
	}
	return f->pos < f->size && !f->done && !s->st.stopped;
}

/* End of input: every event is complete; let them all out; flush the output. */
void svs_finish(scan_t *s)
{
	for (int i = 0; i < s->thn; i++) {
		ev_t *e = s->th[i].ev;
		if (!e->complete) {
			unlink_building(s, e);
			e->complete = 1;
		}
	}
	s->thn = 0;
	while (s->hhn) {
		ev_t *e = hh_pop(s);
		emit(s, e);
		free(e->recs);
		free(e);
	}
	if (s->outn)
		out_flush(s);
}

const stats_t *svs_stats(scan_t *s)
{
	return &s->st;
}

void svs_free(scan_t *s)
{
	while (s->hhn) {
		ev_t *e = hh_pop(s);
		free(e->recs);
		free(e);
	}
	for (int i = 0; i < s->nfiles; i++)
		if (s->files[i].map)
			munmap(s->files[i].map, s->files[i].size);
	free(s->files);
	free(s->tn);
	free(s->tid);
	free(s->tnlen);
	free(s->hash);
	free(s->th);
	free(s->hh);
	free(s->fs);
	free(s->out);
	free(s->scratch);
	free(s->brec);
	free(s->bev);
	free(s);
}
