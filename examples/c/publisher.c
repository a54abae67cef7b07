/* Publishes generated frames as the stream STREAM, for any number of subscribers (such as
 * `frameshare consume --stream STREAM --sink verify`, which checks every pixel), then ends it.
 *   cc publisher.c $(pkg-config --cflags --libs frameshare) -o publisher
 *   ./publisher STREAM [FRAMES] */
#include <frameshare.h>
#include <stdio.h>
#include <stdlib.h>

static void check(fs_status status, const char *what) {
    if (status != FS_OK) {
        fprintf(stderr, "publisher: %s: %s: %s\n", what, fs_status_name(status), fs_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s STREAM [FRAMES]\n", argv[0]);
        return 2;
    }
    uint64_t frames = argc > 2 ? strtoull(argv[2], NULL, 10) : 300;
    fs_publisher_options options = fs_publisher_options_default();
    options.name = "c-publisher";
    options.pattern = "box"; /* announced: verifying consumers recompute each frame from it */
    fs_publisher *publisher;
    check(fs_publisher_new(argv[1], &options, &publisher), "publishing");
    check(fs_publisher_allocate_buffers(publisher, "auto", FS_FORMAT_XR24, 640, 480, 4),
          "allocating buffers");
    check(fs_publisher_wait_for_consumers(publisher, 1, 10000), "waiting for a consumer");
    for (uint64_t seq = 0; seq < frames; seq++) {
        fs_loan *loan;
        check(fs_publisher_loan(publisher, &loan), "loaning a buffer");
        if (!loan)
            continue; /* every buffer still out (drop policy): the frame is dropped */
        if (seq == 0) {
            fs_buffer_info b;
            check(fs_loan_buffer(loan, &b), "buffer info");
            printf("buffers: %s, %ux%u, plane 0 fd %d stride %u\n",
                   b.kind == FS_BUFFER_DMA_HEAP ? "dma-heap" : "not dma-heap", b.width, b.height,
                   b.planes[0].fd, b.planes[0].stride);
        }
        check(fs_loan_fill_generated(loan, seq), "drawing"); /* the generator's frame seq */
        check(fs_loan_set_source_seq(loan, seq), "metadata");
        check(fs_loan_set_key_value(loan, "origin", (const uint8_t *)"c", 1), "metadata");
        check(fs_loan_publish(loan, seq), "publishing a frame");
    }
    fs_publisher_stats stats;
    check(fs_publisher_finish(publisher, &stats), "ending the stream");
    printf("published %llu frames, dropped %llu\n", (unsigned long long)stats.published,
           (unsigned long long)stats.dropped);
    return 0;
}
