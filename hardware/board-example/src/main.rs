//! An MC station module on an STM32F411 "Black Pill": the firmware core (`mc-firmware`) on a
//! real board, talking to the hub over a UART and reporting what the chip itself can measure.
//!
//! Only what is specific to the board lives here:
//! - [`Uptime`], the [`Clock`]: TIM5 counting milliseconds since boot;
//! - [`Uart`], the [`Transport`]: USART1 at 115200 8N1 on PA9 (TX) and PA10 (RX), received by
//!   interrupt into a ring buffer, sent by waiting on the transmit register;
//! - [`ChipSensors`], the [`Sensors`]: the internal temperature sensor and the supply voltage
//!   (from VREFINT), both on ADC1;
//! - the main loop: [`SerialFirmware::poll`], then sleep (`wfi`) until the deadline it returned
//!   or until a byte arrives.
//!
//! Framing, handshake, heartbeats, report by exception, command acknowledgements and their
//! retransmissions are the core's: `hardware/PROTOCOL.md` describes them, and they behave here
//! exactly as in `firmware-sim --serial`.
//!
//! A `Reboot` command restarts the module in software: [`SerialFirmware`] resets the core to its
//! factory state (uptime, sequence numbers, intervals) and says hello again, without resetting
//! the MCU. That is deliberate: RAM survives, and with it the core's memory of the last command,
//! so the hub's retransmission of a `Reboot` whose acknowledgement was lost is recognised and
//! answered instead of rebooting again (see `ModuleCore::command`). A board that wants a real
//! reset (`cortex_m::peripheral::SCB::sys_reset()`) must keep `ModuleCore::last_command` in
//! memory that survives it (an RTC backup register) and hand it back with
//! `ModuleCore::restore_last_command` after booting.
#![no_std]
#![no_main]

use core::{
    cell::{Cell, RefCell},
    time::Duration,
};

use cortex_m_rt::{entry, exception};
use critical_section::Mutex;
use heapless::Deque;
use mc_firmware::{Clock, CoreConfig, LinkConfig, ModuleCore, Sensors, SerialFirmware, Transport};
use mc_protocol::{FirmwareVersion, ModuleId, ReadingName, link::ADDRESS_POINT_TO_POINT};
use panic_halt as _;
use stm32f4xx_hal::{
    adc::{
        Adc,
        config::{AdcConfig, SampleTime},
    },
    hal_02::adc::Channel,
    nb,
    pac::{self, ADC1, Interrupt, TIM5, USART1, interrupt},
    prelude::*,
    rcc::Config,
    serial::{self, Rx, Tx},
    signature::{VDDA_CALIB, VtempCal30, VtempCal110},
    timer::{CounterMs, SysCounter, SysEvent, Timer},
};

/// This module's id, announced in every hello. The hub only accepts ids it knows
/// (`hub module add <ID> --name ...`), and each board needs its own: change it here before
/// flashing another board, or set it when building, without editing this file:
/// `MC_MODULE_ID=MC-2002-BLK cargo build --release`. The rule (3 to 32 characters of
/// `A-Z a-z 0-9 - _`, the first a letter or digit) is checked at boot: a board with an invalid
/// id halts before saying anything.
const MODULE_ID: &str = match option_env!("MC_MODULE_ID") {
    Some(id) => id,
    None => "MC-2001-BLK",
};

/// Heartbeat interval at boot (the hub may change it by command). The hub declares the module
/// offline after three missed heartbeats.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Telemetry period at boot: the sensors are sampled this often and a reading is sent only when
/// it moved by more than its deadband.
const TELEMETRY: Duration = Duration::from_secs(5);
/// Every this many telemetry periods (one minute), all readings are sent even if none moved.
const FULL_REPORT_EVERY: u32 = 12;

/// Received bytes waiting for the main loop. The hub's frames to a module are short (an
/// `Accept` or a command, under 20 bytes), and the loop wakes on every byte, so this only has to
/// cover the few milliseconds the loop spends writing a frame or sampling the ADC.
const RX_BUFFER: usize = 256;

/// Longest sleep between two polls. SysTick is 24 bits wide: at HCLK/8 it can wait 5.4 s at
/// 25 MHz, 1.3 s at the F411's 100 MHz maximum. Waking at least this often also keeps
/// [`Uptime`] ahead of its counter's wrap.
const MAX_SLEEP_MS: u32 = 1_000;

#[entry]
fn main() -> ! {
    let dp = pac::Peripherals::take().expect("peripherals are taken once, here");
    let cp = cortex_m::Peripherals::take().expect("core peripherals are taken once, here");

    // The Black Pill's 25 MHz crystal, as the system clock without the PLL: plenty for this
    // firmware. Not the internal oscillator: it drifts by up to 4 % between -10 and 85 °C (the
    // F411 datasheet), and a UART stops working at about that much, which a module in a field
    // enclosure would reach. A board without this crystal: `Config::hsi()` (indoors), or
    // `Config::hse(<its crystal>)`.
    let mut rcc = dp.RCC.freeze(Config::hse(25.MHz()));

    let uptime = Uptime::new(dp.TIM5.counter_ms(&mut rcc));

    // USART1 on PA9/PA10: the pins the F411's ROM bootloader also listens on, free on the
    // Black Pill's header (USB uses PA11/PA12). 8N1 is the HAL's default frame.
    let gpioa = dp.GPIOA.split(&mut rcc);
    let serial = dp
        .USART1
        .serial((gpioa.pa9, gpioa.pa10), 115_200.bps(), &mut rcc)
        .expect("115200 baud is reachable from a 25 MHz bus clock");
    let (tx, mut rx) = serial.split();
    rx.listen();
    critical_section::with(|cs| {
        RX.borrow(cs).replace(Some(RxState {
            uart: rx,
            buffer: Deque::new(),
        }))
    });
    // SAFETY: unmasking an interrupt can break a critical section that relies on it being
    // masked; none does here. Its handler only touches `RX`, through a critical section, and
    // `RX` is filled before this point, so the handler always finds the receiver.
    unsafe { cortex_m::peripheral::NVIC::unmask(Interrupt::USART1) };

    let mut sleep = Timer::syst_external(cp.SYST, &rcc.clocks).counter::<1_000>();
    sleep.listen(SysEvent::Update);

    let adc = Adc::new(dp.ADC1, true, AdcConfig::default(), &mut rcc);
    let config = CoreConfig {
        fw: FirmwareVersion::new(env!("CARGO_PKG_VERSION")).expect("a crate version is short"),
        heartbeat: HEARTBEAT,
        telemetry: TELEMETRY,
        full_report_every: FULL_REPORT_EVERY,
    };
    let core = ModuleCore::new(config, ChipSensors::new(adc), uptime.now());
    let link = LinkConfig {
        module: ModuleId::new(MODULE_ID).expect("MODULE_ID follows the module id rule"),
        address: ADDRESS_POINT_TO_POINT,
    };
    let mut firmware = SerialFirmware::new(link, core);
    let mut uart = Uart { tx };

    loop {
        let Ok(deadline) = firmware.poll(&mut uart, &uptime) else {
            // Reading never fails (see `Uart`) and this UART's transmit only ever waits; should
            // a transport report an error anyway, do what a closed port calls for: start over
            // with a hello.
            firmware.link_lost();
            continue;
        };
        sleep_until(deadline, &uptime, &mut sleep);
    }
}

/// Sleeps (`wfi`) until `deadline` (at most [`MAX_SLEEP_MS`]) or until a byte arrives.
///
/// The check and the sleep run with interrupts masked: a byte received just after the check
/// would otherwise be left in the buffer for a whole sleep. `wfi` still wakes on the pending
/// interrupt, which then runs as the critical section ends.
fn sleep_until(deadline: Duration, clock: &Uptime, timer: &mut SysCounter<1_000>) {
    let Some(left) = deadline.checked_sub(clock.now()).filter(|d| !d.is_zero()) else {
        return;
    };
    // Rounded up: waking early would only cost a poll with nothing to do.
    let ms = u32::try_from(left.as_micros().div_ceil(1_000))
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_SLEEP_MS);
    if timer.start(ms.millis()).is_err() {
        return; // cannot happen with MAX_SLEEP_MS; polling again is always correct
    }
    critical_section::with(|cs| {
        let received = RX
            .borrow_ref(cs)
            .as_ref()
            .is_some_and(|rx| !rx.buffer.is_empty());
        // `wait` reports a timeout that expired (and ran its empty handler) since `start`.
        if !received && timer.wait().is_err() {
            cortex_m::asm::wfi();
        }
    });
}

/// SysTick only ends a `wfi`; whether it expired is read from its flag in [`sleep_until`].
#[exception]
fn SysTick() {}

/// Milliseconds since boot, from TIM5 (32 bits) ticking at 1 kHz, extended to 64 bits.
///
/// The counter starts over after [`UPTIME_PERIOD_MS`] (49.7 days); a reading smaller than the
/// previous one means it did, which holds as long as `now` runs at least once per period (the
/// main loop polls every [`MAX_SLEEP_MS`] at most).
struct Uptime {
    timer: CounterMs<TIM5>,
    last: Cell<u32>,
    wraps: Cell<u64>,
}

/// TIM5 counts `0 ..= 0xFFFF_FFFE`: the HAL's counter reloads at `timeout - 1`, and the longest
/// timeout it takes is `u32::MAX` ticks.
const UPTIME_PERIOD_MS: u64 = u32::MAX as u64;

impl Uptime {
    fn new(mut timer: CounterMs<TIM5>) -> Self {
        timer
            .start(u32::MAX.millis())
            .expect("TIM5 is 32 bits wide: u32::MAX ticks fit");
        Self {
            timer,
            last: Cell::new(0),
            wraps: Cell::new(0),
        }
    }
}

impl Clock for Uptime {
    fn now(&self) -> Duration {
        let ticks = self.timer.now().ticks();
        if ticks < self.last.get() {
            self.wraps.set(self.wraps.get() + 1);
        }
        self.last.set(ticks);
        Duration::from_millis(self.wraps.get() * UPTIME_PERIOD_MS + u64::from(ticks))
    }
}

/// What the USART1 interrupt shares with the main loop: the receiver and the bytes it received.
struct RxState {
    uart: Rx<USART1>,
    buffer: Deque<u8, RX_BUFFER>,
}

static RX: Mutex<RefCell<Option<RxState>>> = Mutex::new(RefCell::new(None));

/// A byte arrived (or a line error happened): move everything the UART holds into the buffer.
///
/// A byte that is lost (buffer full, overrun) or damaged (framing, noise) damages its frame,
/// which the link layer already handles: the CRC rejects the frame, the module reports it to the
/// hub, the hub retransmits, and decoding starts over at the next frame delimiter. So line
/// errors are dropped here rather than surfaced through [`Transport::read`], where the only
/// answer would be to restart the whole handshake.
#[interrupt]
fn USART1() {
    critical_section::with(|cs| {
        if let Some(rx) = RX.borrow_ref_mut(cs).as_mut() {
            loop {
                match rx.uart.read() {
                    // Full: the byte is lost (and its frame fails its CRC).
                    Ok(byte) => {
                        let _ = rx.buffer.push_back(byte);
                    }
                    Err(nb::Error::WouldBlock) => break,
                    // The HAL has cleared the error (and dropped the byte it concerned).
                    Err(nb::Error::Other(_)) => {}
                }
            }
        }
    });
}

/// The link to the hub: USART1, non-blocking on receive (the interrupt's buffer), blocking on
/// transmit until the last byte is in the transmit register. A 100-byte hello takes 9 ms at
/// 115200 baud; receiving goes on meanwhile, by interrupt.
struct Uart {
    tx: Tx<USART1>,
}

impl Transport for Uart {
    type Error = serial::Error;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        critical_section::with(|cs| {
            let mut rx = RX.borrow_ref_mut(cs);
            let Some(rx) = rx.as_mut() else {
                return Ok(0);
            };
            let mut n = 0;
            while n < buf.len()
                && let Some(byte) = rx.buffer.pop_front()
            {
                buf[n] = byte;
                n += 1;
            }
            Ok(n)
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.tx.bwrite_all(bytes)
    }
}

/// Index of each reading in [`ChipSensors::names`].
const TEMPERATURE: usize = 0;
const VDD: usize = 1;

/// Conversions averaged per temperature reading: the sensor's output jitters by a few LSB.
const TEMPERATURE_SAMPLES: u32 = 16;

/// ADC1 input 18: the F411's temperature sensor (RM0383 §11.9), shared with the VBAT divider and
/// read as the sensor while VBAT sensing is off. The HAL's `adc::Temperature` is input 16, where
/// the F401/F405/F407 have it, but not the F411.
struct TemperatureSensor;

impl Channel<ADC1> for TemperatureSensor {
    type ID = u8;
    fn channel() -> u8 {
        18
    }
}

/// What the chip measures about itself, so the example needs no wiring beyond the UART:
/// - `temperature` (°C): the die's temperature sensor, calibrated with the two points ST
///   programs into every chip (30 °C and 110 °C); a few degrees above ambient, ±1–2 °C;
/// - `vdd` (V): the 3.3 V rail as the ADC sees it (VDDA, which the Black Pill ties to VDD),
///   from a conversion of the internal reference VREFINT and its factory value.
struct ChipSensors {
    adc: Adc<ADC1>,
    names: [ReadingName; 2],
}

impl ChipSensors {
    fn new(mut adc: Adc<ADC1>) -> Self {
        // Also turns VBAT sensing off, which would otherwise take over input 18.
        adc.enable_temperature_and_vref();
        let name = |s| ReadingName::new(s).expect("a valid reading name");
        Self {
            adc,
            names: [name("temperature"), name("vdd")],
        }
    }
}

impl Sensors for ChipSensors {
    fn names(&self) -> &[ReadingName] {
        &self.names
    }

    fn sample(&mut self, values: &mut [f32]) {
        // Converts VREFINT and compares it with its factory value (taken at 3.3 V): VDDA in mV.
        self.adc.calibrate();
        let vdda_mv = self.adc.reference_voltage() as f32;
        // 480 cycles at 12.5 MHz (PCLK2/2) = 38 µs: the sensor needs at least 10 µs.
        let sum: u32 = (0..TEMPERATURE_SAMPLES)
            .map(|_| u32::from(self.adc.convert(&TemperatureSensor, SampleTime::Cycles_480)))
            .sum();
        // The factory points were taken at VDDA = 3.3 V: bring the reading to that scale.
        let raw = sum as f32 / TEMPERATURE_SAMPLES as f32 * vdda_mv / VDDA_CALIB as f32;
        let cal30 = f32::from(VtempCal30::get().read());
        let cal110 = f32::from(VtempCal110::get().read());
        // A chip without calibration data (some clones) gives a non-finite value, which the
        // core never reports.
        values[TEMPERATURE] = 30.0 + (raw - cal30) * (110.0 - 30.0) / (cal110 - cal30);
        values[VDD] = vdda_mv / 1000.0;
    }

    fn deadband(&self, index: usize) -> f32 {
        match index {
            TEMPERATURE => 0.5, // °C: above the averaged sensor's jitter
            VDD => 0.02,        // V: a regulator's ripple and the ADC's noise stay below
            _ => 0.0,
        }
    }
}
