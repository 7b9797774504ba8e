// bnnhw fast path: a Verilator C++ main that streams frames through bnn_top with no Python in
// the per-cycle loop. bnnhw.sim.fast writes the beats, runs this, reads the results and
// compares them with the golden model; this program only drives and records.
//
// Usage: harness IN OUT FRAMES BEATS IN_WORDS OUT_WORDS TIMING STALL_PPM SEED IDLE [TRACE]
//               [--flash IMAGE OFFSET]
//   IN: FRAMES * BEATS payloads of IN_WORDS little-endian uint32 (i__payload, `last` included).
//   Phase A streams frames 0..TIMING-1 with no stalls and waits for their results (for the
//   initiation interval and latency); phase B streams frames 0..FRAMES-1 with random gaps on
//   the input and random backpressure on the output, each with probability STALL_PPM / 1e6.
//   OUT: uint64 header {frames in, results out, cycles, ok, status, load cycles} (status 1
//   and load cycles 0 without a flash), then for the TIMING + FRAMES
//   frames of both phases: uint64 first-beat cycle, last-beat cycle, result cycle (each array
//   whole), then the results' o__payload as OUT_WORDS uint32 each.
//   IDLE: give up after this many cycles without a transfer (ok = 0 then).
//   TRACE: optional waveform file (.vcd, or .fst if built with FST tracing).
//   Built with -DBNNHW_FLASH, for a top whose weights are loaded from an SPI flash (ports
//   flash__sck/cs/copi/cipo and status, bnnhw.gateware.ports): a flash model holds IMAGE at
//   OFFSET (0xFF elsewhere, as erased), starts in deep power-down and answers 0xAB (release)
//   and 0x03 (read), SPI mode 0, as bnnhw.testing.FlashModel does in Amaranth's simulator.
//   Cycles before `status` leaves LOADING (0) do not count as idle; if it becomes BAD (2),
//   the run stops there (ok = 0). The header then also holds the status and the cycle it was
//   set: {frames in, results out, cycles, ok, status, load cycles}.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#if VM_TRACE
#if VM_TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC Trace;
#else
#include "verilated_vcd_c.h"
typedef VerilatedVcdC Trace;
#endif
#endif

// Ports are CData/SData/IData (<= 32 bits), QData (<= 64) or VlWide<N> (wider); the overloads
// copy between them and arrays of ceil(width / 32) uint32 words.
static void put(CData &port, const uint32_t *w) { port = (CData)w[0]; }
static void put(SData &port, const uint32_t *w) { port = (SData)w[0]; }
static void put(IData &port, const uint32_t *w) { port = w[0]; }
static void put(QData &port, const uint32_t *w) { port = (QData)w[0] | ((QData)w[1] << 32); }
template <std::size_t N> static void put(VlWide<N> &port, const uint32_t *w) {
    for (std::size_t k = 0; k < N; k++) port[k] = w[k];
}
static void get(const CData &port, uint32_t *w) { w[0] = port; }
static void get(const SData &port, uint32_t *w) { w[0] = port; }
static void get(const IData &port, uint32_t *w) { w[0] = port; }
static void get(const QData &port, uint32_t *w) { w[0] = (uint32_t)port; w[1] = port >> 32; }
template <std::size_t N> static void get(const VlWide<N> &port, uint32_t *w) {
    for (std::size_t k = 0; k < N; k++) w[k] = port[k];
}

// Verilator escapes "__" in port names as "___05F".
#define I_PAYLOAD i___05Fpayload
#define I_VALID i___05Fvalid
#define I_READY i___05Fready
#define O_PAYLOAD o___05Fpayload
#define O_VALID o___05Fvalid
#define O_READY o___05Fready

#ifdef BNNHW_FLASH
#define FLASH_SCK flash___05Fsck
#define FLASH_CS flash___05Fcs
#define FLASH_COPI flash___05Fcopi
#define FLASH_CIPO flash___05Fcipo

struct FlashModel {
    std::vector<uint8_t> image;
    uint64_t offset = 0;
    bool asleep = true;
    int bits = 0, command = -1, sck = 0;
    uint32_t value = 0;
    int64_t address = -1;
    uint64_t sent = 0, reads = 0;

    uint8_t byte_at(uint64_t a) const {
        a &= 0xFFFFFF;
        return (a >= offset && a - offset < image.size()) ? image[a - offset] : 0xFF;
    }
    // Called after every rising clock edge with the pins the design drives; returns cipo.
    int step(int cs, int sck_now, int copi, int cipo) {
        if (!cs) {
            bits = 0; value = 0; command = -1; address = -1; sent = 0; sck = sck_now;
            return cipo;
        }
        if (sck_now && !sck && address < 0) {           // rising edge: a bit in
            value = (value << 1) | (copi & 1);
            if (++bits == 8) {
                command = value & 0xFF;
                if (command == 0xAB) asleep = false;
            } else if (bits == 32 && command == 0x03 && !asleep) {
                address = value & 0xFFFFFF;
            }
        } else if (!sck_now && sck && address >= 0) {   // falling edge: a bit out
            const uint8_t byte = byte_at(address + sent / 8);
            cipo = (byte >> (7 - sent % 8)) & 1;
            if (sent % 8 == 7) reads++;
            sent++;
        }
        sck = sck_now;
        return cipo;
    }
};
#endif

static uint64_t rng_state;
static uint32_t next_random() {  // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

int main(int argc, char **argv) {
    if (argc < 11) {
        fprintf(stderr, "usage: %s IN OUT FRAMES BEATS IN_WORDS OUT_WORDS TIMING STALL_PPM "
                        "SEED IDLE [TRACE]\n", argv[0]);
        return 2;
    }
    const char *in_path = argv[1], *out_path = argv[2];
    const uint64_t frames = strtoull(argv[3], 0, 10), beats = strtoull(argv[4], 0, 10);
    const uint64_t in_words = strtoull(argv[5], 0, 10), out_words = strtoull(argv[6], 0, 10);
    const uint64_t timing = strtoull(argv[7], 0, 10), stall_ppm = strtoull(argv[8], 0, 10);
    rng_state = strtoull(argv[9], 0, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const uint64_t idle_limit = strtoull(argv[10], 0, 10);
    const uint64_t total = timing + frames;
    // A gap or a backpressure cycle happens when next_random() < stall_threshold.
    const uint32_t stall_threshold = (uint32_t)((stall_ppm * 4294967296ULL) / 1000000ULL);

    std::vector<uint32_t> input(frames * beats * in_words);
    FILE *f = fopen(in_path, "rb");
    if (!f || fread(input.data(), 4, input.size(), f) != input.size()) {
        fprintf(stderr, "harness: cannot read %llu words from %s\n",
                (unsigned long long)input.size(), in_path);
        return 2;
    }
    fclose(f);

    std::vector<uint64_t> first(total, 0), last(total, 0), done(total, 0);
    std::vector<uint32_t> results(total * out_words, 0);

    const char *trace_path = nullptr;
#ifdef BNNHW_FLASH
    FlashModel flash;
#endif
    for (int k = 11; k < argc; k++) {
        if (std::string(argv[k]) == "--flash" && k + 2 < argc) {
#ifdef BNNHW_FLASH
            FILE *image = fopen(argv[k + 1], "rb");
            if (!image) {
                fprintf(stderr, "harness: cannot read %s\n", argv[k + 1]);
                return 2;
            }
            int c;
            while ((c = fgetc(image)) != EOF) flash.image.push_back((uint8_t)c);
            fclose(image);
            flash.offset = strtoull(argv[k + 2], 0, 0);
#else
            fprintf(stderr, "harness: built without a flash model (-DBNNHW_FLASH)\n");
            return 2;
#endif
            k += 2;
        } else {
            trace_path = argv[k];
        }
    }

    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(1, argv);
    auto top = std::make_unique<Vtop>(context.get());
#if VM_TRACE
    std::unique_ptr<Trace> trace;
    if (trace_path) {
        context->traceEverOn(true);
        trace.reset(new Trace);
        top->trace(trace.get(), 99);
        trace->open(trace_path);
    }
#endif
    uint64_t time = 0;
    auto half_cycle = [&](int clk) {
        top->clk = clk;
        top->eval();
#if VM_TRACE
        if (trace) trace->dump(time);
#endif
        time += 5;  // 10 ns clock period, timescale 1ns/1ps
    };

    top->clk = 0;
    top->rst = 1;
    top->I_VALID = 0;
    top->O_READY = 0;
    for (int k = 0; k < 4; k++) { half_cycle(0); half_cycle(1); }
    top->rst = 0;

    uint64_t cycle = 0, idle = 0, status = 1, loaded_at = 0;
    uint64_t in_frame = 0, in_beat = 0, out_frame = 0;  // positions over both phases
    bool in_valid = false, ok = true;
    while (out_frame < total) {
#ifdef BNNHW_FLASH
        status = top->status;
        if (status == 0) loaded_at = cycle + 1;
        if (status == 2) {                              // image refused: nothing more to do
            ok = false;
            break;
        }
#endif
        // Phase A (no stalls) drains completely before phase B starts.
        const bool phase_b = in_frame >= timing;
        const bool stall = phase_b && out_frame >= timing && stall_threshold != 0;
        const bool may_send = in_frame < total && (!phase_b || out_frame >= timing);
        if (!in_valid && may_send && !(stall && next_random() < stall_threshold)) {
            const uint64_t frame = phase_b ? in_frame - timing : in_frame;
            put(top->I_PAYLOAD, &input[(frame * beats + in_beat) * in_words]);
            in_valid = true;
        }
        const bool ready = !(stall && next_random() < stall_threshold);
        top->I_VALID = in_valid;
        top->O_READY = ready;
        half_cycle(0);
        const bool in_fire = in_valid && top->I_READY;
        const bool out_fire = ready && top->O_VALID;
        if (out_fire) {
            get(top->O_PAYLOAD, &results[out_frame * out_words]);
            done[out_frame++] = cycle;
            // Progress for the caller: a line per percent of the frames (and the last).
            if (out_frame * 100 / total != (out_frame - 1) * 100 / total || out_frame == total) {
                fprintf(stderr, "progress %llu %llu\n", (unsigned long long)out_frame,
                        (unsigned long long)total);
                fflush(stderr);
            }
        }
        half_cycle(1);
#ifdef BNNHW_FLASH
        top->FLASH_CIPO = flash.step(top->FLASH_CS, top->FLASH_SCK, top->FLASH_COPI,
                                     top->FLASH_CIPO);
#endif
        if (in_fire) {
            if (in_beat == 0) first[in_frame] = cycle;
            in_valid = false;
            if (++in_beat == beats) {
                last[in_frame++] = cycle;
                in_beat = 0;
            }
        }
        cycle++;
        idle = (in_fire || out_fire || status == 0) ? 0 : idle + 1;
        if (idle > idle_limit) {
            ok = false;
            break;
        }
    }
    half_cycle(0);
#if VM_TRACE
    if (trace) trace->close();
#endif
    top->final();

    f = fopen(out_path, "wb");
    if (!f) {
        fprintf(stderr, "harness: cannot write %s\n", out_path);
        return 2;
    }
    const uint64_t header[6] = {in_frame, out_frame, cycle, ok ? 1u : 0u, status, loaded_at};
    fwrite(header, 8, 6, f);
    fwrite(first.data(), 8, total, f);
    fwrite(last.data(), 8, total, f);
    fwrite(done.data(), 8, total, f);
    fwrite(results.data(), 4, results.size(), f);
    fclose(f);
    return 0;
}
