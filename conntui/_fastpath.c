/* The capture thread's common case in C: read the TPACKET_V3 ring, decode, reuse the
 * flow's cached attribution, build the session's rows, and write pcapng blocks.
 *
 * Everything here is an accelerator for code that exists in Python (capture._Ring.take,
 * decode.decode_frame, Engine.process for a flow-cache hit, PcapNgWriter.write): it builds
 * the very same objects (Frame, Segment and Record, with the same shared strings and ints)
 * and the very same bytes. Whatever it is not sure of goes to the Python path, which stays
 * the reference: a SYN, FIN or RST, a flow not in the cache, an unusual header, a flow the
 * verifier or the FIN book wants to see, a comment or interface the writer has not made yet.
 * tests/unit/test_fastpath.py runs both paths over the same frames and compares every row
 * and every byte of the files.
 *
 * Python keeps ownership of every table: this module reads the engine's dicts in place and
 * hands rows back in batches (FastPath.take calls ``flush`` before each Python call and at
 * the end), so the order of rows, pending rows and file blocks is the capture order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#define TP_STATUS_USER 1u
#define SLL_AT 48           /* TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define PREVIEW_LEN 64
#define SNAPLEN 262144
#define EMIT_MAX_BYTES (4u << 20) /* one emit call builds at most this much */

static inline uint16_t rd16be(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32be(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint32_t rd32ne(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void wr32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static double monotonic_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------------- */
/* decoding: the subset of decode._ip that covers nearly all traffic                  */

typedef struct {
    int family;           /* 4 | 6 */
    int proto;            /* 6 | 17 */
    const uint8_t *src, *dst;
    unsigned sport, dport, bits, window;
    uint32_t seq, ack;
    Py_ssize_t payload_len;
    const uint8_t *preview;
    Py_ssize_t preview_len;
} Parsed;

/* 1 when ``d`` (raw IP, as the cooked packet socket hands it) is a TCP or UDP segment
 * this function decodes exactly as decode._ip does; 0 sends the frame the Python way
 * (which also tells a malformed frame from an unusual one). */
static int parse(const uint8_t *d, Py_ssize_t n, unsigned protocol, Parsed *o) {
    if (n < 1) return 0;
    unsigned first = d[0] >> 4;
    if (protocol == ETH_P_IP) {
        if (first != 4) return 0;
    } else if (protocol == ETH_P_IPV6) {
        if (first != 6) return 0;
    } else if (protocol != 0) {
        return 0;
    }
    Py_ssize_t p, end;
    int proto;
    if (first == 4) {
        if (n < 20) return 0;
        Py_ssize_t hl = (Py_ssize_t)(d[0] & 0x0F) * 4;
        unsigned total = rd16be(d + 2), frag = rd16be(d + 6);
        proto = d[9];
        if (hl < 20 || (frag & 0x1FFF)) return 0;
        if (proto != 6 && proto != 17) return 0;
        end = total ? (Py_ssize_t)total : n;
        p = hl;
        if (end < p || p > n) return 0;
        o->src = d + 12;
        o->dst = d + 16;
        o->family = 4;
    } else if (first == 6) {
        if (n < 40) return 0;
        unsigned plen = rd16be(d + 4);
        proto = d[6];
        if (proto != 6 && proto != 17) return 0; /* extension headers: the Python way */
        p = 40;
        end = plen ? p + (Py_ssize_t)plen : n;
        if (p > end) return 0;
        o->src = d + 8;
        o->dst = d + 24;
        o->family = 6;
    } else {
        return 0;
    }
    Py_ssize_t avail = end < n ? end : n;
    Py_ssize_t ip_payload = end - p;
    o->proto = proto;
    if (proto == 6) {
        if (p + 20 > avail) return 0;
        const uint8_t *t = d + p;
        Py_ssize_t thl = (Py_ssize_t)(t[12] >> 4) * 4;
        if (thl < 20 || thl > ip_payload || p + thl > avail) return 0;
        o->sport = rd16be(t);
        o->dport = rd16be(t + 2);
        o->seq = rd32be(t + 4);
        o->ack = rd32be(t + 8);
        o->bits = t[13];
        o->window = rd16be(t + 14);
        o->payload_len = ip_payload - thl;
        Py_ssize_t start = p + thl, stop = start + PREVIEW_LEN;
        o->preview = d + start;
        o->preview_len = (stop < avail ? stop : avail) - start;
        return 1;
    }
    if (p + 8 > avail || ip_payload < 8) return 0;
    const uint8_t *u = d + p;
    Py_ssize_t ulen = rd16be(u + 4);
    o->sport = rd16be(u);
    o->dport = rd16be(u + 2);
    o->bits = 0;
    o->window = 0;
    o->seq = o->ack = 0;
    if (8 <= ulen && ulen <= ip_payload) {
        o->payload_len = ulen - 8;
        if (p + ulen < avail) avail = p + ulen;
    } else {
        o->payload_len = ip_payload - 8;
    }
    Py_ssize_t start = p + 8, stop = start + PREVIEW_LEN;
    o->preview = d + start;
    o->preview_len = (stop < avail ? stop : avail) - start;
    return 1;
}

/* ---------------------------------------------------------------------------------- */
/* the FastPath object                                                                */

typedef struct {
    PyObject_HEAD
    PyTypeObject *frame_type, *segment_type, *record_type;
    Py_ssize_t rec_off[4]; /* Record slots: seq, frame, segment, attribution */
    PyObject *addr_cache;  /* decode._addr_text: packed bytes → str */
    PyObject *addr_fn;     /* decode._addr(family, packed) */
    PyObject *u16;         /* decode._U16_VALUES */
    PyObject *flags_text;  /* decode._FLAGS_TEXT */
    PyObject *tcp, *udp;   /* the proto strings decode hands out */
    PyObject *answers;     /* FlowCache.fast: cache key → Attribution */
    PyObject *fins, *old_conns;     /* FlowHistory books (pairs) */
    PyObject *challenge, *reuseport; /* Verifier questions */
    PyObject *names;       /* ifindex → interface name */
    PyObject *ifname_fn;   /* capture.ifname(ifindex) */
    PyObject *slow;        /* Engine._fast_slow(frame) → stored (bool) */
    PyObject *flush;       /* Engine._fast_flush(records, pending, counts, frames) */
    PyObject *sync;        /* Engine._fast_sync(): the flow cache follows tables.current() */
    PyObject *session;     /* len(session): the next row's number */
    PyObject *linktype;    /* int: LINKTYPE_RAW */
    PyObject *empty;       /* "" */
    /* the last addresses decoded (a flow's two ends, most of the time): packed → str */
    uint8_t addr_packed[4][16];
    int addr_len[4];
    PyObject *addr_str[4];
    int addr_next;
} FastPath;

static PyObject *s_match, *s_attribution, *s_popleft, *s_block_state;

static int member_offset(PyTypeObject *t, const char *name, Py_ssize_t *out) {
    PyObject *d = PyDict_GetItemString(t->tp_dict, name); /* borrowed */
    if (d == NULL || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", t->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", t->tp_name, name);
        return -1;
    }
    *out = m->offset;
    return 0;
}

static void fp_clear_refs(FastPath *self) {
    Py_CLEAR(self->frame_type);
    Py_CLEAR(self->segment_type);
    Py_CLEAR(self->record_type);
    Py_CLEAR(self->addr_cache);
    Py_CLEAR(self->addr_fn);
    Py_CLEAR(self->u16);
    Py_CLEAR(self->flags_text);
    Py_CLEAR(self->tcp);
    Py_CLEAR(self->udp);
    Py_CLEAR(self->answers);
    Py_CLEAR(self->fins);
    Py_CLEAR(self->old_conns);
    Py_CLEAR(self->challenge);
    Py_CLEAR(self->reuseport);
    Py_CLEAR(self->names);
    Py_CLEAR(self->ifname_fn);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->flush);
    Py_CLEAR(self->sync);
    Py_CLEAR(self->session);
    Py_CLEAR(self->linktype);
    Py_CLEAR(self->empty);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(self->addr_str[i]);
        self->addr_len[i] = 0;
    }
}

static int fp_traverse(FastPath *self, visitproc visit, void *arg) {
    Py_VISIT(self->answers);
    Py_VISIT(self->fins);
    Py_VISIT(self->old_conns);
    Py_VISIT(self->challenge);
    Py_VISIT(self->reuseport);
    Py_VISIT(self->slow);
    Py_VISIT(self->flush);
    Py_VISIT(self->sync);
    Py_VISIT(self->session);
    Py_VISIT(self->names);
    return 0;
}

static int fp_clear(FastPath *self) {
    fp_clear_refs(self);
    return 0;
}

static void fp_dealloc(FastPath *self) {
    PyObject_GC_UnTrack(self);
    fp_clear_refs(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int fp_init(FastPath *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"frame_type", "segment_type", "record_type", "addr_cache", "addr_fn",
                             "u16", "flags_text", "tcp", "udp", "answers", "fins", "old_conns",
                             "challenge", "reuseport", "names", "ifname_fn", "slow", "flush",
                             "session", "linktype", "sync", NULL};
    PyObject *o[21];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "$OOOOOOOOOOOOOOOOOOOOO", kwlist, &o[0], &o[1], &o[2],
                                     &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11],
                                     &o[12], &o[13], &o[14], &o[15], &o[16], &o[17], &o[18], &o[19],
                                     &o[20]))
        return -1;
    for (int i = 0; i < 3; i++)
        if (!PyType_Check(o[i])) {
            PyErr_SetString(PyExc_TypeError, "frame, segment and record types expected");
            return -1;
        }
    if (!PyType_IsSubtype((PyTypeObject *)o[0], &PyTuple_Type) ||
        !PyType_IsSubtype((PyTypeObject *)o[1], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "Frame and Segment must be tuples");
        return -1;
    }
    if (!PyDict_Check(o[3]) || !PyTuple_Check(o[5]) || PyTuple_GET_SIZE(o[5]) != 65536 ||
        !PyTuple_Check(o[6]) || PyTuple_GET_SIZE(o[6]) != 256 || !PyDict_Check(o[9]) ||
        !PyDict_Check(o[10]) || !PyDict_Check(o[11]) || !PyDict_Check(o[12]) ||
        !PyDict_Check(o[13]) || !PyDict_Check(o[14])) {
        PyErr_SetString(PyExc_TypeError, "FastPath: unexpected table types");
        return -1;
    }
    Py_ssize_t off[4];
    const char *slots[4] = {"seq", "frame", "segment", "attribution"};
    for (int i = 0; i < 4; i++)
        if (member_offset((PyTypeObject *)o[2], slots[i], &off[i]) < 0) return -1;
    fp_clear_refs(self);
    memcpy(self->rec_off, off, sizeof off);
    PyObject **dst[21] = {(PyObject **)&self->frame_type, (PyObject **)&self->segment_type,
                          (PyObject **)&self->record_type, &self->addr_cache, &self->addr_fn,
                          &self->u16, &self->flags_text, &self->tcp, &self->udp, &self->answers,
                          &self->fins, &self->old_conns, &self->challenge, &self->reuseport,
                          &self->names, &self->ifname_fn, &self->slow, &self->flush,
                          &self->session, &self->linktype, &self->sync};
    for (int i = 0; i < 21; i++) *dst[i] = Py_NewRef(o[i]);
    self->empty = PyUnicode_FromString("");
    return self->empty ? 0 : -1;
}

/* After any call into Python code the refresher thread may have swapped the socket table
 * (the interpreter can switch threads there): the flow cache must follow it before its
 * answers are used again, as Attributor.attribute's FlowCache.get(current()) does per frame. */
static int sync_tables(FastPath *self) {
    PyObject *r = PyObject_CallNoArgs(self->sync);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* A tuple subclass instance, as tuple.__new__(cls, items) builds it (items stolen).
 * Its items are all atomic (str, bytes, int, float): it can be in no reference cycle, so
 * it leaves the collector's lists at once, as the collector itself would untrack it on
 * its first pass (_PyTuple_MaybeUntrack); at 250k rows a second that pass is not free. */
static PyObject *tuple_of(PyTypeObject *t, PyObject **items, Py_ssize_t n) {
    PyObject *o = t->tp_alloc(t, n);
    if (o == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(o, i, items[i]);
    if (PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
    return o;
}

static PyObject *addr_lookup(FastPath *self, int family, const uint8_t *packed);

static PyObject *addr_text(FastPath *self, int family, const uint8_t *packed) {
    int len = family == 4 ? 4 : 16;
    for (int i = 0; i < 4; i++)
        if (self->addr_len[i] == len && memcmp(self->addr_packed[i], packed, (size_t)len) == 0)
            return Py_NewRef(self->addr_str[i]);
    PyObject *text = addr_lookup(self, family, packed);
    if (text != NULL) {
        int i = self->addr_next;
        self->addr_next = (i + 1) & 3;
        Py_XSETREF(self->addr_str[i], Py_NewRef(text));
        memcpy(self->addr_packed[i], packed, (size_t)len);
        self->addr_len[i] = len;
    }
    return text;
}

/* decode._addr: the shared str of a packed address (its cache, or the function). */
static PyObject *addr_lookup(FastPath *self, int family, const uint8_t *packed) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)packed, family == 4 ? 4 : 16);
    if (key == NULL) return NULL;
    PyObject *text = PyDict_GetItemWithError(self->addr_cache, key); /* borrowed */
    if (text != NULL) {
        Py_DECREF(key);
        return Py_NewRef(text);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *r = PyObject_CallFunction(self->addr_fn, "iO", family == 4 ? 2 : 10, key);
    Py_DECREF(key);
    if (r != NULL && sync_tables(self) < 0) Py_CLEAR(r);
    return r;
}

/* The 4-tuple as history.pair() orders it; NULL with no error on a failed compare. */
static PyObject *pair_of(PyObject *src, PyObject *sport, PyObject *dst, PyObject *dport,
                         unsigned sp, unsigned dp) {
    int lt = PyUnicode_Compare(src, dst);
    if (lt == -1 && PyErr_Occurred()) return NULL;
    int lower = lt < 0 || (lt == 0 && sp <= dp);
    return lower ? PyTuple_Pack(4, src, sport, dst, dport) : PyTuple_Pack(4, dst, dport, src, sport);
}

typedef struct {
    PyObject *recs, *items, *counts;
    long long frames;
    long long next_seq;
    PyObject *now; /* time.monotonic() when the block was read: when its rows were stored */
} Batch;

static int batch_start(FastPath *self, Batch *b) {
    /* the session's public length is its row count, so the next row's number */
    Py_ssize_t n = PyObject_Length(self->session);
    if (n < 0) return -1;
    b->next_seq = (long long)n;
    return 0;
}

static int batch_flush(FastPath *self, Batch *b) {
    if (PyList_GET_SIZE(b->recs) == 0 && b->frames == 0) return 0;
    PyObject *r = PyObject_CallFunction(self->flush, "OOOL", b->recs, b->items, b->counts, b->frames);
    if (r == NULL) return -1;
    Py_DECREF(r);
    if (sync_tables(self) < 0) return -1;
    b->frames = 0;
    if (PyList_SetSlice(b->recs, 0, PY_SSIZE_T_MAX, NULL) < 0) return -1;
    if (PyList_SetSlice(b->items, 0, PY_SSIZE_T_MAX, NULL) < 0) return -1;
    PyDict_Clear(b->counts);
    return batch_start(self, b);
}

/* One frame of the common case: 1 stored, 0 not for the fast path (nothing done), -1 error. */
static int fast_frame(FastPath *self, Batch *b, PyObject *frame, const uint8_t *d, Py_ssize_t n,
                      unsigned protocol, unsigned pkttype, long ifindex, PyObject *iface) {
    Parsed ps;
    if (!parse(d, n, protocol, &ps)) return 0;
    if (ps.bits & 0x07) return 0; /* FIN, SYN, RST: the Python way */
    int tcp = ps.proto == 6;
    if (tcp && PyDict_GET_SIZE(self->reuseport)) return 0;
    if (tcp && ps.bits == 0x10 && ps.payload_len == 0 && PyDict_GET_SIZE(self->challenge)) return 0;
    PyObject *src = addr_text(self, ps.family, ps.src);
    if (src == NULL) return -1;
    PyObject *dst = addr_text(self, ps.family, ps.dst);
    if (dst == NULL) {
        Py_DECREF(src);
        return -1;
    }
    PyObject *sport = PyTuple_GET_ITEM(self->u16, ps.sport);
    PyObject *dport = PyTuple_GET_ITEM(self->u16, ps.dport);
    PyObject *flags = PyTuple_GET_ITEM(self->flags_text, ps.bits);
    PyObject *proto = tcp ? self->tcp : self->udp;
    PyObject *pkt = NULL, *ifi = NULL, *key = NULL;
    int rc = 0;
    if (tcp && (PyDict_GET_SIZE(self->fins) || PyDict_GET_SIZE(self->old_conns))) {
        PyObject *pr = pair_of(src, sport, dst, dport, ps.sport, ps.dport);
        if (pr == NULL) {
            rc = -1;
            goto done;
        }
        int in_fins = PyDict_Contains(self->fins, pr);
        int in_old = in_fins ? 0 : PyDict_Contains(self->old_conns, pr);
        Py_DECREF(pr);
        if (in_fins < 0 || in_old < 0) {
            rc = -1;
            goto done;
        }
        if (in_fins || in_old) goto done;
    }
    pkt = PyLong_FromUnsignedLong(pkttype);
    ifi = PyLong_FromLong(ifindex);
    if (pkt == NULL || ifi == NULL) {
        rc = -1;
        goto done;
    }
    key = PyTuple_Pack(8, proto, src, sport, dst, dport, flags, pkt, ifi);
    if (key == NULL) {
        rc = -1;
        goto done;
    }
    PyObject *att = PyDict_GetItemWithError(self->answers, key); /* borrowed */
    if (att == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    Py_INCREF(att);
    /* the Segment, field for field as decode._ip builds it */
    PyObject *it[17];
    it[0] = Py_NewRef(PyTuple_GET_ITEM(frame, 0)); /* the frame's time, shared as decode does */
    it[1] = Py_NewRef(iface);
    it[2] = Py_NewRef(proto);
    it[3] = PyLong_FromLong(ps.family);
    it[4] = Py_NewRef(src);
    it[5] = Py_NewRef(sport);
    it[6] = Py_NewRef(dst);
    it[7] = Py_NewRef(dport);
    it[8] = Py_NewRef(tcp ? flags : self->empty);
    it[9] = PyLong_FromSsize_t(ps.payload_len);
    it[10] = PyLong_FromUnsignedLong(ps.seq);
    it[11] = PyLong_FromUnsignedLong(ps.ack);
    it[12] = Py_NewRef(PyTuple_GET_ITEM(self->u16, ps.window));
    it[13] = Py_NewRef(pkt);
    it[14] = Py_NewRef(ifi);
    it[15] = PyTuple_GET_ITEM(frame, 7); /* wire_len */
    Py_INCREF(it[15]);
    it[16] = PyBytes_FromStringAndSize((const char *)ps.preview, ps.preview_len);
    for (int i = 0; i < 17; i++)
        if (it[i] == NULL) {
            for (int j = 0; j < 17; j++) Py_XDECREF(it[j]);
            Py_DECREF(att);
            rc = -1;
            goto done;
        }
    PyObject *seg = tuple_of(self->segment_type, it, 17);
    if (seg == NULL) {
        Py_DECREF(att);
        rc = -1;
        goto done;
    }
    PyTypeObject *rt = self->record_type;
    PyObject *rec = rt->tp_alloc(rt, 0);
    PyObject *seqno = PyLong_FromLongLong(b->next_seq);
    if (rec == NULL || seqno == NULL) {
        Py_XDECREF(rec);
        Py_XDECREF(seqno);
        Py_DECREF(seg);
        Py_DECREF(att);
        rc = -1;
        goto done;
    }
    char *base = (char *)rec;
    *(PyObject **)(base + self->rec_off[0]) = seqno;
    *(PyObject **)(base + self->rec_off[1]) = Py_NewRef(frame);
    *(PyObject **)(base + self->rec_off[2]) = seg;
    PyObject *match = PyObject_GetAttr(att, s_match);
    *(PyObject **)(base + self->rec_off[3]) = att; /* the reference taken above */
    if (match == NULL) {
        Py_DECREF(rec);
        rc = -1;
        goto done;
    }
    PyObject *item = PyTuple_Pack(3, b->now, frame, rec);
    /* only the pending queue refers to it, and it to nothing that refers back */
    if (item != NULL) PyObject_GC_UnTrack(item);
    PyObject *cnt = PyDict_GetItemWithError(b->counts, match);
    PyObject *inc = NULL;
    if (item != NULL && !PyErr_Occurred())
        inc = PyLong_FromLongLong((cnt ? PyLong_AsLongLong(cnt) : 0) + 1);
    int ok = item != NULL && inc != NULL && PyList_Append(b->recs, rec) == 0 &&
             PyList_Append(b->items, item) == 0 && PyDict_SetItem(b->counts, match, inc) == 0;
    Py_XDECREF(inc);
    Py_XDECREF(item);
    Py_DECREF(match);
    Py_DECREF(rec);
    if (!ok) {
        rc = -1;
        goto done;
    }
    b->next_seq++;
    rc = 1;
done:
    Py_XDECREF(key);
    Py_XDECREF(pkt);
    Py_XDECREF(ifi);
    Py_DECREF(src);
    Py_DECREF(dst);
    return rc;
}

static PyObject *iface_name(FastPath *self, long ifindex) {
    PyObject *k = PyLong_FromLong(ifindex);
    if (k == NULL) return NULL;
    PyObject *name = PyDict_GetItemWithError(self->names, k);
    if (name != NULL) {
        Py_DECREF(k);
        return Py_NewRef(name);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(k);
        return NULL;
    }
    name = PyObject_CallOneArg(self->ifname_fn, k);
    if (name != NULL && PyDict_SetItem(self->names, k, name) < 0) Py_CLEAR(name);
    if (name != NULL && sync_tables(self) < 0) Py_CLEAR(name);
    Py_DECREF(k);
    return name;
}

/* take(ring, limit, budget) → (frames, stored)
 *
 * The ready blocks of ``ring`` (capture._Ring: ``map``, ``current``, ``block_size``,
 * ``blocks``) from ``ring.current`` on, whole blocks until ``limit`` frames; each frame is
 * stored here or handed to ``slow``. Stops early (handing the block back) once ``budget``
 * rows are stored (a negative budget: no limit). ``ring.current`` is kept up to date and
 * the rows built so far are flushed even when a callback raises. */
static int ring_int(PyObject *ring, const char *name, Py_ssize_t *out) {
    PyObject *v = PyObject_GetAttrString(ring, name);
    if (v == NULL) return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *fp_take(FastPath *self, PyObject *args) {
    PyObject *ring;
    Py_ssize_t current, block_size, blocks, limit;
    long long budget;
    if (!PyArg_ParseTuple(args, "OnL", &ring, &limit, &budget)) return NULL;
    if (self->session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FastPath not initialised");
        return NULL;
    }
    if (ring_int(ring, "current", &current) < 0 || ring_int(ring, "block_size", &block_size) < 0 ||
        ring_int(ring, "blocks", &blocks) < 0)
        return NULL;
    PyObject *map = PyObject_GetAttrString(ring, "map");
    if (map == NULL) return NULL;
    Py_buffer view;
    int got = PyObject_GetBuffer(map, &view, PyBUF_WRITABLE);
    Py_DECREF(map);
    if (got < 0) return NULL;
    if (block_size < 64 || blocks <= 0 || view.len < block_size * blocks || current < 0 ||
        current >= blocks) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "take: ring geometry does not fit the buffer");
        return NULL;
    }
    /* the refresher may have swapped the table while the caller waited in select() */
    if (sync_tables(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint8_t *mm = (uint8_t *)view.buf;
    Batch b = {PyList_New(0), PyList_New(0), PyDict_New(), 0, 0, NULL};
    long long stored = 0, frames = 0;
    int failed = b.recs == NULL || b.items == NULL || b.counts == NULL || batch_start(self, &b) < 0;
    PyObject *last_iface = NULL;
    long last_ifindex = -1;
    while (!failed && frames < limit && (budget < 0 || stored < budget)) {
        uint8_t *blk = mm + current * block_size;
        uint32_t status = __atomic_load_n((uint32_t *)(blk + 8), __ATOMIC_ACQUIRE);
        if (!(status & TP_STATUS_USER)) break;
        uint32_t count = rd32ne(blk + 12);
        Py_ssize_t pos = rd32ne(blk + 16);
        Py_XSETREF(b.now, PyFloat_FromDouble(monotonic_now()));
        if (b.now == NULL) {
            failed = 1;
            break;
        }
        for (uint32_t i = 0; i < count && !failed && (budget < 0 || stored < budget); i++) {
            if (pos < 0 || pos + SLL_AT + 20 > block_size) break; /* a corrupt block: drop it */
            uint8_t *h = blk + pos;
            uint32_t next = rd32ne(h), sec = rd32ne(h + 4), nsec = rd32ne(h + 8),
                     snaplen = rd32ne(h + 12), len = rd32ne(h + 16);
            uint16_t mac;
            memcpy(&mac, h + 24, 2);
            uint16_t proto_be;
            memcpy(&proto_be, h + SLL_AT + 2, 2);
            int32_t ifindex;
            memcpy(&ifindex, h + SLL_AT + 4, 4);
            unsigned pkttype = h[SLL_AT + 10];
            if ((Py_ssize_t)mac + snaplen + pos > block_size) break;
            unsigned protocol = ((proto_be & 0xFF) << 8) | (proto_be >> 8);
            double ts = (double)sec + (double)nsec * 1e-9;
            frames++;
            if (last_iface == NULL || ifindex != last_ifindex) {
                Py_XDECREF(last_iface);
                last_iface = iface_name(self, ifindex);
                last_ifindex = ifindex;
                if (last_iface == NULL) {
                    failed = 1;
                    break;
                }
            }
            PyObject *fi[9];
            fi[0] = PyFloat_FromDouble(ts);
            fi[1] = PyBytes_FromStringAndSize((const char *)h + mac, snaplen);
            fi[2] = Py_NewRef(self->linktype);
            fi[3] = Py_NewRef(last_iface);
            fi[4] = PyLong_FromLong(ifindex);
            fi[5] = PyLong_FromUnsignedLong(pkttype);
            fi[6] = Py_NewRef(PyTuple_GET_ITEM(self->u16, protocol & 0xFFFF));
            fi[7] = len < 65536 ? Py_NewRef(PyTuple_GET_ITEM(self->u16, len)) : PyLong_FromUnsignedLong(len);
            fi[8] = Py_NewRef(self->empty);
            int bad = 0;
            for (int k = 0; k < 9; k++) bad |= fi[k] == NULL;
            if (bad) {
                for (int k = 0; k < 9; k++) Py_XDECREF(fi[k]);
                failed = 1;
                break;
            }
            PyObject *frame = tuple_of(self->frame_type, fi, 9);
            if (frame == NULL) {
                failed = 1;
                break;
            }
            /* (a wire length of 0, which decode reads as the captured length: the Python way) */
            int r = len ? fast_frame(self, &b, frame, h + mac, snaplen, protocol, pkttype, ifindex,
                                     last_iface)
                        : 0;
            if (r == 1) {
                b.frames++;
                stored++;
            } else if (r == 0) {
                PyObject *res = NULL;
                if (batch_flush(self, &b) == 0) res = PyObject_CallOneArg(self->slow, frame);
                if (res == NULL) {
                    failed = 1;
                } else {
                    stored += PyObject_IsTrue(res) == 1;
                    Py_DECREF(res);
                    /* the rows after it settle from now on (pending stays in time order) */
                    Py_XSETREF(b.now, PyFloat_FromDouble(monotonic_now()));
                    if (b.now == NULL || sync_tables(self) < 0 || batch_start(self, &b) < 0) failed = 1;
                }
            } else {
                failed = 1;
            }
            Py_DECREF(frame);
            if (next == 0) break; /* the last packet of the block (or a corrupt count) */
            pos += next;
        }
        /* hand the block back (TP_STATUS_KERNEL), even after an error: it was read */
        __atomic_store_n((uint32_t *)(blk + 8), 0u, __ATOMIC_RELEASE);
        current = (current + 1) % blocks;
    }
    Py_XDECREF(last_iface);
    PyBuffer_Release(&view);
    /* Whatever happened, the rows built so far go to the session and the blocks handed
     * back stay handed back: a raised error (a full disk under the spool, a second
     * Ctrl-C) is raised after that. */
    PyObject *et = NULL, *ev = NULL, *etb = NULL;
    if (failed) PyErr_Fetch(&et, &ev, &etb);
    if (b.recs != NULL && b.items != NULL && b.counts != NULL && batch_flush(self, &b) < 0) {
        if (failed)
            PyErr_Clear(); /* the first error is the one to tell */
        else
            failed = 1;
    }
    PyObject *cur = PyLong_FromSsize_t(current);
    if (cur == NULL || PyObject_SetAttrString(ring, "current", cur) < 0) {
        if (failed)
            PyErr_Clear();
        else
            failed = 1;
    }
    Py_XDECREF(cur);
    if (et != NULL) PyErr_Restore(et, ev, etb);
    Py_XDECREF(b.recs);
    Py_XDECREF(b.items);
    Py_XDECREF(b.counts);
    Py_XDECREF(b.now);
    if (failed) return NULL;
    return Py_BuildValue("LL", frames, stored);
}

/* ---------------------------------------------------------------------------------- */
/* pcapng Enhanced Packet Blocks, as PcapNgWriter.write builds them                   */

typedef struct {
    PyObject *interfaces, *by_att, *flag_opts; /* the writer's dicts (borrowed) */
    PyObject *last_att, *last_entry;           /* held (a freed one's address may come back) */
    long long number;                          /* frame number of the last block built */
    long long window;                          /* capfile.comments.REF_WINDOW */
    PyObject *last_iface;                      /* held, likewise */
    long last_ifindex, last_linktype;
    uint32_t last_iid;
    uint8_t *buf;
    size_t len, cap;
} Epb;

static int epb_open(Epb *e, PyObject *writer) {
    memset(e, 0, sizeof *e);
    e->last_ifindex = -1;
    /* PcapNgWriter.block_state(): (interfaces, by_att, flag_opts, count, ref_window) */
    PyObject *state = PyObject_CallMethodNoArgs(writer, s_block_state);
    if (state == NULL) return -1;
    if (!PyTuple_Check(state) || PyTuple_GET_SIZE(state) != 5) {
        Py_DECREF(state);
        PyErr_SetString(PyExc_TypeError, "block_state() must return a 5-tuple");
        return -1;
    }
    e->interfaces = Py_NewRef(PyTuple_GET_ITEM(state, 0));
    e->by_att = Py_NewRef(PyTuple_GET_ITEM(state, 1));
    e->flag_opts = Py_NewRef(PyTuple_GET_ITEM(state, 2));
    e->number = PyLong_AsLongLong(PyTuple_GET_ITEM(state, 3));
    if (!PyErr_Occurred()) e->window = PyLong_AsLongLong(PyTuple_GET_ITEM(state, 4));
    Py_DECREF(state);
    if (PyErr_Occurred()) return -1;
    if (!PyDict_Check(e->interfaces) || !PyDict_Check(e->by_att) || !PyDict_Check(e->flag_opts)) {
        PyErr_SetString(PyExc_TypeError, "not a PcapNgWriter");
        return -1;
    }
    return 0;
}

static void epb_close(Epb *e) {
    Py_XDECREF(e->last_att);
    Py_XDECREF(e->last_entry);
    Py_XDECREF(e->last_iface);
    Py_XDECREF(e->interfaces);
    Py_XDECREF(e->by_att);
    Py_XDECREF(e->flag_opts);
    PyMem_Free(e->buf);
}

static PyObject *epb_bytes(Epb *e) {
    return PyBytes_FromStringAndSize((const char *)e->buf, (Py_ssize_t)e->len);
}

/* Append one EPB: 1 done, 0 the writer must do it (a comment or interface it has not
 * made yet, an unusual frame), -1 error. */
static int epb_add(Epb *e, PyObject *frame, PyObject *att) {
    if (!PyTuple_Check(frame) || PyTuple_GET_SIZE(frame) < 9) return 0;
    PyObject *data = PyTuple_GET_ITEM(frame, 1);
    if (!PyBytes_Check(data)) return 0;
    PyObject *iface = PyTuple_GET_ITEM(frame, 3);
    long linktype = PyLong_AsLong(PyTuple_GET_ITEM(frame, 2));
    long ifindex = PyLong_AsLong(PyTuple_GET_ITEM(frame, 4));
    if (PyErr_Occurred()) return -1;
    uint32_t iid;
    if (iface == e->last_iface && ifindex == e->last_ifindex && linktype == e->last_linktype) {
        iid = e->last_iid;
    } else {
        PyObject *k = PyTuple_Pack(3, PyTuple_GET_ITEM(frame, 2), iface, PyTuple_GET_ITEM(frame, 4));
        if (k == NULL) return -1;
        PyObject *v = PyDict_GetItemWithError(e->interfaces, k);
        Py_DECREF(k);
        if (v == NULL) return PyErr_Occurred() ? -1 : 0;
        iid = (uint32_t)PyLong_AsUnsignedLong(v);
        if (PyErr_Occurred()) return -1;
        Py_XSETREF(e->last_iface, Py_NewRef(iface));
        e->last_ifindex = ifindex;
        e->last_linktype = linktype;
        e->last_iid = iid;
    }
    /* the writer's comment entry: [full option, reference option, frame of the full one, ...] */
    PyObject *entry;
    if (att == e->last_att) {
        entry = e->last_entry;
    } else {
        PyObject *k = PyLong_FromVoidPtr(att);
        if (k == NULL) return -1;
        PyObject *hit = PyDict_GetItemWithError(e->by_att, k);
        Py_DECREF(k);
        if (hit == NULL) return PyErr_Occurred() ? -1 : 0;
        if (!PyTuple_Check(hit) || PyTuple_GET_SIZE(hit) != 2 || PyTuple_GET_ITEM(hit, 0) != att)
            return 0;
        entry = PyTuple_GET_ITEM(hit, 1);
        if (!PyList_Check(entry) || PyList_GET_SIZE(entry) < 3) return 0;
        Py_XSETREF(e->last_att, Py_NewRef(att));
        Py_XSETREF(e->last_entry, Py_NewRef(entry));
    }
    /* within the window of its full JSON: the reference; else the writer writes it in full */
    long long at = PyLong_AsLongLong(PyList_GET_ITEM(entry, 2));
    if (at == -1 && PyErr_Occurred()) return -1;
    if (at <= 0 || e->number + 1 - at > e->window) return 0;
    PyObject *opt = PyList_GET_ITEM(entry, 1);
    if (!PyBytes_Check(opt)) return 0;
    PyObject *flag = PyDict_GetItemWithError(e->flag_opts, PyTuple_GET_ITEM(frame, 5));
    if (flag == NULL && PyErr_Occurred()) return -1;
    if (flag != NULL && !PyBytes_Check(flag)) return 0;
    double ts = PyFloat_AsDouble(PyTuple_GET_ITEM(frame, 0));
    long long wire = PyLong_AsLongLong(PyTuple_GET_ITEM(frame, 7));
    if (PyErr_Occurred()) return -1;
    Py_ssize_t caplen = PyBytes_GET_SIZE(data);
    long long orig = wire > caplen ? wire : caplen;
    if (caplen > SNAPLEN) caplen = SNAPLEN;
    if (orig > 0xFFFFFFFFLL) return 0;
    uint64_t ticks = ts > 0 ? (uint64_t)(ts * 1000000 + 0.5) : 0;
    Py_ssize_t olen = PyBytes_GET_SIZE(opt), flen = flag ? PyBytes_GET_SIZE(flag) : 0;
    size_t pad = (size_t)(-caplen & 3);
    size_t total = 36 + (size_t)caplen + pad + (size_t)olen + (size_t)flen;
    if (total > 0xFFFFFFFFu) return 0;
    if (e->len + total > e->cap) {
        size_t cap = e->cap ? e->cap : 1 << 16;
        while (cap < e->len + total) cap *= 2;
        uint8_t *nb = PyMem_Realloc(e->buf, cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        e->buf = nb;
        e->cap = cap;
    }
    uint8_t *p = e->buf + e->len;
    wr32le(p, 6);
    wr32le(p + 4, (uint32_t)total);
    wr32le(p + 8, iid);
    wr32le(p + 12, (uint32_t)(ticks >> 32));
    wr32le(p + 16, (uint32_t)ticks);
    wr32le(p + 20, (uint32_t)caplen);
    wr32le(p + 24, (uint32_t)orig);
    p += 28;
    memcpy(p, PyBytes_AS_STRING(data), (size_t)caplen);
    p += caplen;
    memset(p, 0, pad);
    p += pad;
    memcpy(p, PyBytes_AS_STRING(opt), (size_t)olen);
    p += olen;
    if (flen) memcpy(p, PyBytes_AS_STRING(flag), (size_t)flen);
    p += flen;
    wr32le(p, 0); /* opt_endofopt */
    wr32le(p + 4, (uint32_t)total);
    e->len += total;
    e->number++;
    return 1;
}

static PyObject *rec_slot(FastPath *self, PyObject *rec, int i) {
    if (Py_TYPE(rec) != self->record_type) return NULL;
    return *(PyObject **)((char *)rec + self->rec_off[i]); /* borrowed */
}

/* emit(pending, horizon, writer) → (blocks, written, more, error)
 *
 * Pops the settled rows (capture time ≤ horizon) off the front of ``pending`` and builds
 * their EPBs for ``writer`` (None: only pops). ``more`` is True when it stopped at a row
 * the Python way must hand on (left at the front), or at the size limit. */
static PyObject *fp_emit(FastPath *self, PyObject *args) {
    PyObject *pending, *writer;
    double horizon;
    if (!PyArg_ParseTuple(args, "OdO", &pending, &horizon, &writer)) return NULL;
    Epb e;
    int use_writer = writer != Py_None;
    if (use_writer && epb_open(&e, writer) < 0) {
        epb_close(&e);
        return NULL;
    }
    if (!use_writer) memset(&e, 0, sizeof e);
    PyObject *popleft = PyObject_GetAttr(pending, s_popleft);
    long long written = 0;
    int more = 0, failed = popleft == NULL;
    while (!failed) {
        Py_ssize_t n = PySequence_Size(pending);
        if (n < 0) {
            failed = 1;
            break;
        }
        if (n == 0) break;
        if (e.len >= EMIT_MAX_BYTES) {
            more = 1;
            break;
        }
        PyObject *item = PySequence_GetItem(pending, 0);
        if (item == NULL) {
            failed = 1;
            break;
        }
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            Py_DECREF(item);
            more = 1;
            break;
        }
        double at = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 0));
        if (at == -1.0 && PyErr_Occurred()) {
            Py_DECREF(item);
            failed = 1;
            break;
        }
        if (at > horizon) {
            Py_DECREF(item);
            break;
        }
        PyObject *rec = PyTuple_GET_ITEM(item, 2);
        PyObject *att = rec == Py_None ? NULL : rec_slot(self, rec, 3);
        int r = 1;
        if (att == NULL)
            r = 0;
        else if (use_writer)
            r = epb_add(&e, PyTuple_GET_ITEM(item, 1), att);
        Py_DECREF(item);
        if (r < 0) {
            failed = 1;
            break;
        }
        if (r == 0) {
            more = 1;
            break;
        }
        PyObject *gone = PyObject_CallNoArgs(popleft);
        if (gone == NULL) {
            failed = 1;
            break;
        }
        Py_DECREF(gone);
        written += use_writer;
    }
    Py_XDECREF(popleft);
    /* The rows popped so far have their blocks in the buffer: hand those back with the
     * error (raised by the caller once they are written), never drop them. */
    PyObject *et = NULL, *ev = NULL, *etb = NULL;
    if (failed) {
        PyErr_Fetch(&et, &ev, &etb);
        PyErr_NormalizeException(&et, &ev, &etb);
        if (ev != NULL && etb != NULL) PyException_SetTraceback(ev, etb);
    }
    PyObject *blob = use_writer ? epb_bytes(&e) : PyBytes_FromStringAndSize("", 0);
    PyObject *out = NULL;
    if (blob != NULL)
        out = Py_BuildValue("NLOO", blob, written, more ? Py_True : Py_False, ev ? ev : Py_None);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(etb);
    if (use_writer) epb_close(&e);
    return out;
}

/* blocks(records, start, writer) → (blocks, written, stop)
 *
 * EPBs for ``records[start:]`` (rows of one slotted class with ``frame`` and
 * ``attribution``), until one the writer must do itself: ``stop`` is its index
 * (``len(records)`` when all were done). */
static PyObject *mod_blocks(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *records, *writer;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nO", &PyList_Type, &records, &start, &writer)) return NULL;
    Py_ssize_t i = start < 0 ? 0 : start, first = i, n = PyList_GET_SIZE(records);
    if (i >= n) return Py_BuildValue("yin", "", 0, n);
    PyTypeObject *t = Py_TYPE(PyList_GET_ITEM(records, i));
    Py_ssize_t off_frame, off_att;
    if (member_offset(t, "frame", &off_frame) < 0 || member_offset(t, "attribution", &off_att) < 0)
        return NULL;
    Epb e;
    if (epb_open(&e, writer) < 0) {
        epb_close(&e);
        return NULL;
    }
    int failed = 0;
    for (; i < n && e.len < EMIT_MAX_BYTES; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (Py_TYPE(rec) != t) break;
        PyObject *frame = *(PyObject **)((char *)rec + off_frame);
        PyObject *att = *(PyObject **)((char *)rec + off_att);
        if (frame == NULL || att == NULL) break;
        int r = epb_add(&e, frame, att);
        if (r < 0) failed = 1;
        if (r <= 0) break;
    }
    PyObject *out = NULL;
    if (!failed) {
        PyObject *blob = epb_bytes(&e);
        if (blob != NULL) out = Py_BuildValue("Nnn", blob, i - first, i);
    }
    epb_close(&e);
    return out;
}

static PyMethodDef fp_methods[] = {
    {"take", (PyCFunction)fp_take, METH_VARARGS,
     "take(ring, limit, budget) -> (frames, stored)"},
    {"emit", (PyCFunction)fp_emit, METH_VARARGS,
     "emit(pending, horizon, writer) -> (blocks, written, more, error)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "conntui._fastpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The capture thread's common case (see conntui/fastpath.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fp_init,
    .tp_dealloc = (destructor)fp_dealloc,
    .tp_traverse = (traverseproc)fp_traverse,
    .tp_clear = (inquiry)fp_clear,
    .tp_methods = fp_methods,
};

static PyMethodDef mod_methods[] = {
    {"blocks", (PyCFunction)mod_blocks, METH_VARARGS,
     "blocks(records, start, writer) -> (blocks, written, stop)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "C accelerator for conntui's capture thread.", -1,
    mod_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&FastPathType) < 0) return NULL;
    s_match = PyUnicode_InternFromString("match");
    s_attribution = PyUnicode_InternFromString("attribution");
    s_popleft = PyUnicode_InternFromString("popleft");
    s_block_state = PyUnicode_InternFromString("block_state");
    if (!s_match || !s_attribution || !s_popleft || !s_block_state) return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
