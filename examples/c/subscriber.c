/* Subscribes to the stream STREAM (such as `frameshare produce --stream STREAM`) and checks
 * every frame, reading its pixels in place: the sequence stamp the generator draws in the top
 * row is decoded here, and every byte is compared by fs_frame_verify_generated.
 *   cc subscriber.c $(pkg-config --cflags --libs frameshare) -o subscriber
 *   ./subscriber STREAM */
#include <frameshare.h>
#include <stdio.h>
#include <stdlib.h>

static void check(fs_status status, const char *what) {
    if (status != FS_OK) {
        fprintf(stderr, "subscriber: %s: %s: %s\n", what, fs_status_name(status), fs_last_error());
        exit(1);
    }
}

/* The stamp: bit i of seq is cell i of row 0 (cells width/64 pixels wide, even), white or
 * black; for XR24 the green byte of each cell's middle pixel says which. */
static uint64_t stamp(const fs_mapped_plane *p) {
    uint32_t width = p->row_bytes / 4, cell = (width / 64) & ~1u;
    uint32_t bits = width / (cell < 2 ? (cell = 2) : cell);
    uint64_t seq = 0;
    for (uint32_t i = 0; i < bits && i < 64; i++)
        if (p->data[(i * cell + cell / 2) * 4 + 1] > 128)
            seq |= 1ull << i;
    return seq;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s STREAM\n", argv[0]);
        return 2;
    }
    fs_subscriber *sub;
    check(fs_subscriber_connect(argv[1], NULL, &sub), "subscribing");
    unsigned long long good = 0, bad = 0;
    for (fs_event e;;) {
        check(fs_subscriber_next(sub, -1, &e), "waiting for the stream");
        if (e.kind == FS_EVENT_FRAME) {
            fs_buffer_info b;
            fs_mapping m; /* waits for the acquire fence, then maps in place: no copy */
            check(fs_frame_buffer(e.frame, &b), "buffer info");
            check(fs_frame_map(e.frame, &m), "mapping");
            int stamp_ok = b.fourcc != FS_FORMAT_XR24 || stamp(&m.planes[0]) == e.seq;
            if (stamp_ok && fs_frame_verify_generated(e.frame) == FS_OK)
                good++;
            else if (bad++ < 5)
                fprintf(stderr, "frame %llu: %s\n", (unsigned long long)e.seq,
                        stamp_ok ? fs_last_error() : "wrong sequence stamp");
            check(fs_frame_release(e.frame, -1), "giving the frame back");
        } else if (e.kind == FS_EVENT_ENDED) {
            printf("%s: %llu frames verified, %llu wrong\n", e.text, good, bad);
            break;
        }
    }
    fs_subscriber_free(sub);
    return bad == 0 && good > 0 ? 0 : 1;
}
